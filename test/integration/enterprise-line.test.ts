import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createEnterpriseLine, type EnterpriseLineOptions } from '../../src/line/enterprise-line.ts';
import type { LineClientReport } from '../support/line-client.ts';
import { Redis } from 'ioredis';
import type { RedisClient } from '../../src/redis-connection.ts';
import { connectTestRedis, scanKeys } from '../support/test-redis.ts';

const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
const clientScript = fileURLToPath(new URL('../support/line-client.ts', import.meta.url));

let redis: RedisClient;
let keyPrefix: string;
const children = new Set<ChildProcess>();

beforeAll(() => {
  redis = connectTestRedis(redisUrl);
});
afterAll(async () => {
  await redis.quit();
});

// Every test gets its own prefix, and leaves neither keys nor processes behind. Hash-tagged, as the
// service's queue prefix is, so that a line's keys share one Cluster slot.
function newPrefix(): string {
  keyPrefix = `{test:line:${randomUUID()}}`;
  return keyPrefix;
}
function newLine(options: Omit<EnterpriseLineOptions, 'keyPrefix' | 'turnTtlMs'> & { turnTtlMs?: number }) {
  return createEnterpriseLine(redis, { keyPrefix: newPrefix(), turnTtlMs: 10_000, ...options });
}
async function keysUnder(prefix: string): Promise<string[]> {
  return scanKeys(redis, `${prefix}:*`);
}
afterEach(async () => {
  for (const child of children) child.kill('SIGKILL');
  children.clear();
  const keys = await keysUnder(keyPrefix);
  for (const key of keys) await redis.del(key);
});

async function redisNowMs(): Promise<number> {
  const [seconds, microseconds] = await redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(microseconds) / 1000);
}

/** Runs test/support/line-client.ts in its own Node process and resolves with the turns it took. */
function runClient(env: Record<string, string>): Promise<LineClientReport> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [clientScript], { env: { ...process.env, REDIS_URL: redisUrl, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    children.add(child);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      children.delete(child);
      if (code === 0) resolve(JSON.parse(stdout) as LineClientReport);
      else reject(new Error(`line-client exited with ${code ?? signal}: ${stderr}`));
    });
  });
}

describe('enterprise line', () => {
  it('across 3 processes, grants turns in id order, one at a time, never more than 3 in a window counted from the end of each call', async () => {
    const limit = 3;
    const windowMs = 500;
    const messages = 15;
    const prefix = newPrefix();
    const line = createEnterpriseLine(redis, { keyPrefix: prefix, limit, windowMs, turnTtlMs: 10_000 });
    for (let id = 1; id <= messages; id++) await line.join('E-shared', id);
    const env = {
      LINE_PREFIX: prefix,
      LINE_ENTERPRISE: 'E-shared',
      LINE_DURATION_MS: '6000',
      LINE_LIMIT: String(limit),
      LINE_WINDOW_MS: String(windowMs),
      LINE_MESSAGES: String(messages),
    };
    const reports = await Promise.all([0, 1, 2].map((index) => runClient({ ...env, LINE_CLIENTS: '3', LINE_CLIENT_INDEX: String(index) })));

    const sends = reports.flatMap((report) => report.sends).sort((a, b) => a.grantedAt - b.grantedAt);
    expect(sends.map((s) => s.messageId)).toEqual(Array.from({ length: messages }, (_, i) => i + 1));
    for (let i = 1; i < sends.length; i++) {
      // One at a time: a turn is granted only after the one before it ended.
      expect(sends[i]!.grantedAt, `turn of ${sends[i]!.messageId} vs the end of ${sends[i - 1]!.messageId}`).toBeGreaterThanOrEqual(sends[i - 1]!.endedAt);
    }
    for (let i = 0; i + limit < sends.length; i++) {
      expect(sends[i + limit]!.grantedAt - sends[i]!.endedAt, `sends ${i} and ${i + limit}`).toBeGreaterThanOrEqual(windowMs);
    }
    // Every process was in the race (it was refused at least once), so the order above was contested.
    for (const report of reports) expect(report.refusals).toBeGreaterThan(0);
    expect(await keysUnder(prefix)).not.toContain(`${prefix}:line:E-shared`);
  }, 20_000);

  it('tells each message its position and a slot that follows the window, and a head that waits for the window learns exactly when', async () => {
    const windowMs = 1_000;
    const line = newLine({ limit: 2, windowMs });
    const before = await redisNowMs();
    const places = [];
    for (let id = 1; id <= 7; id++) places.push(await line.join('E-1', id));
    expect(places.map((p) => p.position)).toEqual([0, 1, 2, 3, 4, 5, 6]);
    expect(places.map((p) => p.wakesItself)).toEqual([true, false, false, false, false, false, false]);
    // Two per window: positions 0-1 now, 2-3 one window later, 4-5 two windows later.
    for (const [index, place] of places.entries()) {
      const round = Math.floor(index / 2);
      expect(place.etaMs).toBeGreaterThanOrEqual(before + round * windowMs);
      expect(place.etaMs).toBeLessThan(before + round * windowMs + 200);
    }

    for (const id of [1, 2]) {
      expect(await line.take('E-1', id, `t${id}`)).toMatchObject({ kind: 'granted' });
      await line.finish('E-1', id);
    }
    const waiting = await line.take('E-1', 3, 't3');
    expect(waiting).toMatchObject({ kind: 'wait', position: 0 });
    expect(waiting.kind === 'wait' && waiting.slotInMs).toBeGreaterThan(windowMs - 200);
    // A message behind the head is told it is behind, not given the head's slot.
    expect(await line.take('E-1', 5, 't5')).toMatchObject({ kind: 'behind', position: 2, head: 3 });
  });

  it('a message taken out of the line moves everyone behind it forward, and the next head is named to be woken', async () => {
    const line = newLine({ limit: 1, windowMs: 1_000 });
    for (let id = 1; id <= 4; id++) await line.join('E-1', id);
    expect(await line.take('E-1', 1, 't1')).toMatchObject({ kind: 'granted' });
    // Message 2 is next, but 1 is still being sent: nobody to wake yet.
    const busy = await line.take('E-1', 2, 't2');
    expect(busy).toMatchObject({ kind: 'busy', position: 0 });
    const wake = await line.finish('E-1', 1);
    expect(wake?.messageId).toBe(2);
    expect(wake?.inMs).toBeGreaterThan(900);

    const fourBefore = await line.standing('E-1', 4);
    expect(fourBefore).toMatchObject({ kind: 'waiting', position: 2 });
    expect(await line.leave('E-1', 3)).toMatchObject({ messageId: 2 });
    const fourAfter = await line.standing('E-1', 4);
    expect(fourAfter).toMatchObject({ kind: 'waiting', position: 1 });
    expect(fourAfter.kind === 'waiting' && fourBefore.kind === 'waiting' && fourBefore.etaMs - fourAfter.etaMs).toBeGreaterThan(900);
    expect(await line.standing('E-1', 3)).toEqual({ kind: 'absent' });
  });

  it('a message that left the line rejoins by its id, ahead of the messages still waiting', async () => {
    const line = newLine({ limit: 10, windowMs: 1_000 });
    for (let id = 1; id <= 3; id++) await line.join('E-1', id);
    expect(await line.take('E-1', 1, 't1')).toMatchObject({ kind: 'granted' });
    await line.finish('E-1', 1);
    expect(await line.take('E-1', 1, 't1b')).toEqual({ kind: 'absent' });
    await line.rebuild('E-1', [1, 2, 3]);
    expect(await line.standing('E-1', 1)).toMatchObject({ kind: 'waiting', position: 0 });
    expect(await line.standing('E-1', 3)).toMatchObject({ kind: 'waiting', position: 2 });
  });

  it('a turn whose holder never ends it lapses, and the line moves on', async () => {
    // The TTL is long enough for a busy machine to see the turn held before it lapses.
    const turnTtlMs = 1_500;
    const line = newLine({ limit: 5, windowMs: 200, turnTtlMs });
    await line.join('E-1', 1);
    await line.join('E-1', 2);
    const grantedAt = Date.now();
    expect(await line.take('E-1', 1, 't1')).toMatchObject({ kind: 'granted' });
    expect(await line.take('E-1', 2, 't2')).toMatchObject({ kind: 'busy' });
    await sleep(Math.max(0, grantedAt + turnTtlMs + 100 - Date.now()));
    expect(await line.take('E-1', 2, 't2')).toMatchObject({ kind: 'granted' });
  });

  it('idle enterprises leave no keys in Redis two windows after their line drains', async () => {
    const windowMs = 300;
    const line = newLine({ limit: 3, windowMs });
    const prefix = keyPrefix;
    const enterprises = Array.from({ length: 10_000 }, (_, i) => `E-${i}`);
    await Promise.all(
      enterprises.map(async (enterprise) => {
        await line.join(enterprise, 1);
        await line.take(enterprise, 1, 't');
        await line.finish(enterprise, 1);
      }),
    );
    for (const key of (await keysUnder(prefix)).slice(0, 200)) {
      const ttl = await redis.pttl(key);
      expect(ttl === -2 || (ttl >= 0 && ttl <= 2 * windowMs), `${key} ttl ${ttl}`).toBe(true);
    }
    // Every key's TTL is at most two windows: they all go (Redis expires keys on its own schedule).
    const left = async () => {
      const keys = await keysUnder(prefix);
      return keys.length === 0 ? keys : undefined;
    };
    let remaining: string[] | undefined;
    const deadline = Date.now() + 2 * windowMs + 5_000;
    while ((remaining = await left()) === undefined && Date.now() < deadline) await sleep(100);
    expect(remaining ?? (await keysUnder(prefix))).toEqual([]);
  });

  it('widens the window by marginMs', async () => {
    // A margin far wider than the window, so that a busy machine's pauses between the calls cannot
    // blur which of the two the slot follows.
    const windowMs = 200;
    const marginMs = 3_000;
    const line = newLine({ limit: 1, windowMs, marginMs });
    for (const id of [1, 2]) await line.join('E-1', id);
    expect(await line.take('E-1', 1, 'a')).toMatchObject({ kind: 'granted' });
    await line.finish('E-1', 1);
    const finishedAt = Date.now();
    const denial = await line.take('E-1', 2, 'b');
    expect(denial.kind === 'wait' && denial.slotInMs).toBeGreaterThan(windowMs + marginMs - 1_000);
    await sleep(Math.max(0, finishedAt + windowMs + 50 - Date.now()));
    expect(await line.take('E-1', 2, 'c')).toMatchObject({ kind: 'wait' });
  });

  it('fails closed: without Redis, a turn is refused with an error instead of granted', async () => {
    newPrefix();
    const unreachable = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    const line = createEnterpriseLine(unreachable, { keyPrefix, limit: 3, windowMs: 1_000, turnTtlMs: 1_000 });
    try {
      await expect(line.take('E-1', 1, 't1')).rejects.toThrow();
      await expect(line.join('E-1', 1)).rejects.toThrow();
    } finally {
      unreachable.disconnect();
    }
  });
});
