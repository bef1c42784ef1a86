import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createRollingWindowLimiter, type SlotDecision } from '../../src/limiter/rolling-window.ts';
import type { LimiterClientReport } from '../support/limiter-client.ts';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const clientScript = fileURLToPath(new URL('../support/limiter-client.ts', import.meta.url));

let redis: Redis;
let keyPrefix: string;
const children = new Set<ChildProcess>();

beforeAll(() => {
  redis = new Redis(redisUrl);
});
afterAll(async () => {
  await redis.quit();
});

// Every test gets its own prefix, and leaves neither keys nor processes behind.
function newPrefix(): string {
  keyPrefix = `test:limiter:${randomUUID()}`;
  return keyPrefix;
}
async function keysUnder(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return keys;
}
afterEach(async () => {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
  const keys = await keysUnder(keyPrefix);
  if (keys.length > 0) await redis.del(...keys);
});

/** Runs test/support/limiter-client.ts in its own Node process and resolves with what it was granted. */
function grantTime(decision: SlotDecision): number {
  if (!decision.granted) throw new Error(`expected a grant, got a denial (retry in ${decision.retryInMs} ms)`);
  return decision.grantedAt;
}
async function redisNowMs(): Promise<number> {
  const [seconds, microseconds] = await redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(microseconds) / 1000);
}

function runClient(env: Record<string, string>): Promise<LimiterClientReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [clientScript], {
      env: { ...process.env, REDIS_URL: redisUrl, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      children.delete(child);
      if (code === 0) resolve(JSON.parse(stdout) as LimiterClientReport);
      else reject(new Error(`limiter-client exited with ${code ?? signal}: ${stderr}`));
    });
  });
}

describe('rolling-window limiter', () => {
  it('never grants more than 3 in any rolling window across 3 processes, and drains a backlog at the allowed rate', async () => {
    const limit = 3;
    const windowMs = 1_000;
    const durationMs = 3_000;
    const env = {
      LIMITER_PREFIX: newPrefix(),
      LIMITER_ENTERPRISE: 'E-shared',
      LIMITER_DURATION_MS: String(durationMs),
      LIMITER_LIMIT: String(limit),
      LIMITER_WINDOW_MS: String(windowMs),
    };
    const reports = await Promise.all([runClient(env), runClient(env), runClient(env)]);

    const times = reports.flatMap((report) => report.grantedAt).sort((a, b) => a - b);
    for (let i = 0; i + limit < times.length; i++) {
      expect(times[i + limit]! - times[i]!, `grants ${i}..${i + limit} at ${times.slice(i, i + limit + 1).join(', ')}`).toBeGreaterThanOrEqual(windowMs);
    }
    // Liveness: the child that gets the first grant keeps asking for nearly 3 s after it, which spans
    // full batches at +0, +1 s and +2 s: 9 grants. A fourth batch at +3 s depends on how far apart the
    // children started, so it is seen (12 grants) but not asserted.
    expect(times.length).toBeGreaterThanOrEqual(3 * limit);
    // Every process was in the race (it was denied at least once), so the spacing above was contested.
    for (const report of reports) expect(report.denials).toBeGreaterThan(0);
    const spanMs = times.at(-1)! - times[0]!;
    const mostAllowed = limit * (Math.floor(spanMs / windowMs) + 1);
    console.info(
      `limiter drain: ${times.length} grants from first to last in ${spanMs} ms (the window allows at most ${mostAllowed} there); ` +
        `denials per process: ${reports.map((report) => report.denials).join(', ')}; ` +
        `smallest gap between grant i and i+${limit}: ${Math.min(...times.slice(limit).map((t, i) => t - times[i]!))} ms`,
    );
  }, 20_000);

  it('grants a caller who sleeps retryInMs after a denial, so no polling is needed', async () => {
    const limiter = createRollingWindowLimiter(redis, { keyPrefix: newPrefix(), limit: 3, windowMs: 300 });
    let token = 0;
    for (let round = 0; round < 5; round++) {
      let decision = await limiter.acquire('E-1', `t${token++}`);
      while (decision.granted) decision = await limiter.acquire('E-1', `t${token++}`);
      expect(decision.retryInMs).toBeGreaterThan(0);
      expect(decision.retryInMs).toBeLessThanOrEqual(300);
      await sleep(decision.retryInMs);
      expect(await limiter.acquire('E-1', `t${token++}`)).toMatchObject({ granted: true });
    }
  });

  it("one enterprise's exhausted window does not affect another", async () => {
    const limiter = createRollingWindowLimiter(redis, { keyPrefix: newPrefix(), limit: 3, windowMs: 60_000 });
    for (let i = 0; i < 3; i++) expect(await limiter.acquire('E-busy', `busy-${i}`)).toMatchObject({ granted: true });
    expect(await limiter.acquire('E-busy', 'busy-3')).toMatchObject({ granted: false });

    for (let i = 0; i < 3; i++) expect(await limiter.acquire('E-quiet', `quiet-${i}`)).toMatchObject({ granted: true });
    expect(await limiter.peekWaitMs('E-busy')).toBeGreaterThan(59_000);
  });

  it('idle enterprises leave no keys in Redis once their window has passed', async () => {
    const prefix = newPrefix();
    const windowMs = 300;
    const limiter = createRollingWindowLimiter(redis, { keyPrefix: prefix, limit: 3, windowMs });
    const enterprises = Array.from({ length: 10_000 }, (_, i) => `E-${i}`);
    await Promise.all(enterprises.map((enterprise) => limiter.acquire(enterprise, `${enterprise}-t`)));
    // Every key carries an expiry no longer than the window (a key expiring before the check is also fine).
    const ttls = await Promise.all(enterprises.slice(0, 100).map((enterprise) => redis.pttl(`${prefix}:rate:${enterprise}`)));
    for (const ttl of ttls) expect(ttl === -2 || (ttl > 0 && ttl <= windowMs)).toBe(true);

    await sleep(windowMs + 200);
    expect(await keysUnder(prefix)).toEqual([]);
  });

  it('peekWaitMs is 0 while a slot is free and the remaining wait when full, and never takes a slot', async () => {
    const prefix = newPrefix();
    const windowMs = 2_000;
    const limiter = createRollingWindowLimiter(redis, { keyPrefix: prefix, limit: 3, windowMs });
    const key = `${prefix}:rate:E-1`;

    expect(await limiter.peekWaitMs('E-1')).toBe(0);
    expect(await redis.exists(key)).toBe(0);

    const first = await limiter.acquire('E-1', 't1');
    await limiter.acquire('E-1', 't2');
    expect(await limiter.peekWaitMs('E-1')).toBe(0);
    expect(await limiter.peekWaitMs('E-1')).toBe(0);
    expect(await limiter.acquire('E-1', 't3')).toMatchObject({ granted: true });
    expect(await redis.zcard(key)).toBe(3);

    await sleep(200);
    const before = await redisNowMs();
    const waitMs = await limiter.peekWaitMs('E-1');
    const after = await redisNowMs();
    // The slot frees when the first grant leaves the window: exactly grantedAt + windowMs on Redis's clock.
    const freesAt = grantTime(first) + windowMs;
    expect(waitMs).toBeGreaterThanOrEqual(freesAt - after);
    expect(waitMs).toBeLessThanOrEqual(freesAt - before);
    expect(waitMs).toBeLessThan(windowMs - 150);
    expect(await redis.zcard(key)).toBe(3);
  });

  it('a denied acquire records nothing, so a denial never uses up a slot', async () => {
    const prefix = newPrefix();
    const limiter = createRollingWindowLimiter(redis, { keyPrefix: prefix, limit: 1, windowMs: 300 });
    const key = `${prefix}:rate:E-1`;

    expect(await limiter.acquire('E-1', 'granted')).toMatchObject({ granted: true });
    const denials = [];
    for (let i = 0; i < 5; i++) denials.push(await limiter.acquire('E-1', `denied-${i}`));
    expect(denials.every((decision) => !decision.granted)).toBe(true);
    expect(await redis.zrange(key, '0', '-1')).toEqual(['granted']);

    // Had the denials been recorded, they would hold the window shut past this point.
    const last = denials.at(-1)!;
    await sleep(last.granted ? 0 : last.retryInMs);
    expect(await limiter.acquire('E-1', 'after-window')).toMatchObject({ granted: true });
  });

  it('widens the window by marginMs', async () => {
    const limiter = createRollingWindowLimiter(redis, { keyPrefix: newPrefix(), limit: 1, windowMs: 200, marginMs: 300 });
    expect(await limiter.acquire('E-1', 'a')).toMatchObject({ granted: true });
    const denial = await limiter.acquire('E-1', 'b');
    expect(denial.granted).toBe(false);
    expect(!denial.granted && denial.retryInMs).toBeGreaterThan(200);
    await sleep(250);
    expect(await limiter.acquire('E-1', 'c')).toMatchObject({ granted: false });
  });

  it('fails closed: without Redis, acquire rejects instead of granting', async () => {
    newPrefix();
    const unreachable = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    const limiter = createRollingWindowLimiter(unreachable, { keyPrefix: keyPrefix, limit: 3, windowMs: 1_000 });
    try {
      await expect(limiter.acquire('E-1', 't1')).rejects.toThrow();
      await expect(limiter.peekWaitMs('E-1')).rejects.toThrow();
    } finally {
      unreachable.disconnect();
    }
  });
});
