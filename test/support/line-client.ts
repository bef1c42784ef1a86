// Child process for the line's multi-process test: one "worker" that, until a deadline, tries to take a
// turn for every message still in one enterprise's line, as fast as it can; when granted, it holds the
// turn for a moment (a call to WebSMS) and ends it. Prints what it was granted as one JSON line and
// exits. Like the service, where job id = message id, each message is handled by one process: this one
// takes the ids i with (i - 1) % LINE_CLIENTS == LINE_CLIENT_INDEX. Configured through the environment
// so the parent test owns every value: REDIS_URL, LINE_PREFIX, LINE_ENTERPRISE, LINE_DURATION_MS,
// LINE_LIMIT, LINE_WINDOW_MS, LINE_MESSAGES (count; the parent joined ids 1..count), LINE_CLIENTS,
// LINE_CLIENT_INDEX.
import { setTimeout as sleep } from 'node:timers/promises';
import { Cluster, Redis } from 'ioredis';
import { createEnterpriseLine } from '../../src/line/enterprise-line.ts';
import { testRedisTarget } from './test-redis.ts';

export interface LineClientReport {
  pid: number;
  /** Turns taken: message id, grant time and end time, ms on Redis's clock. */
  sends: Array<{ messageId: number; grantedAt: number; endedAt: number }>;
  refusals: number;
}

function requiredEnv(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === '') throw new Error(`line-client: ${name} is not set`);
  return value;
}

const durationMs = Number(requiredEnv('LINE_DURATION_MS'));
const enterprise = requiredEnv('LINE_ENTERPRISE');
const messages = Number(requiredEnv('LINE_MESSAGES'));
const clients = Number(requiredEnv('LINE_CLIENTS'));
const clientIndex = Number(requiredEnv('LINE_CLIENT_INDEX'));
const mine = Array.from({ length: messages }, (_, i) => i + 1).filter((id) => (id - 1) % clients === clientIndex);
// No offline queue and no reconnect: if Redis goes away the child fails at once instead of hanging.
const target = testRedisTarget(requiredEnv('REDIS_URL'));
const failFast = { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null };
const redis =
  target.kind === 'cluster'
    ? new Cluster([...target.nodes], { lazyConnect: true, enableOfflineQueue: false, clusterRetryStrategy: () => null, redisOptions: { maxRetriesPerRequest: 0 } })
    : new Redis(requiredEnv('REDIS_URL'), failFast);
await redis.connect();
const line = createEnterpriseLine(redis, {
  keyPrefix: requiredEnv('LINE_PREFIX'),
  limit: Number(requiredEnv('LINE_LIMIT')),
  windowMs: Number(requiredEnv('LINE_WINDOW_MS')),
  turnTtlMs: 10_000,
});
const redisNow = async () => {
  const [seconds, micros] = await redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
};

const report: LineClientReport = { pid: process.pid, sends: [], refusals: 0 };
const done = new Set<number>();
const deadline = performance.now() + durationMs;
for (let attempt = 0; performance.now() < deadline && done.size < mine.length; attempt++) {
  // Hammering every waiting message, not sleeping until a slot: the most requests land on Redis exactly
  // when a turn ends or a slot frees, which is where a non-atomic check would let two through.
  for (const id of mine) {
    if (performance.now() >= deadline) break;
    if (done.has(id)) continue;
    const taken = await line.take(enterprise, id, `${process.pid}-${attempt}-${id}`);
    if (taken.kind === 'absent') done.add(id);
    if (taken.kind !== 'granted') {
      report.refusals++;
      continue;
    }
    await sleep(Math.random() * 5);
    // The call is over: read the time before ending the turn, so the end recorded is never earlier.
    const endedAt = await redisNow();
    await line.finish(enterprise, id);
    report.sends.push({ messageId: id, grantedAt: taken.grantedAt, endedAt });
    done.add(id);
  }
}
await redis.quit();
process.stdout.write(`${JSON.stringify(report)}\n`);
