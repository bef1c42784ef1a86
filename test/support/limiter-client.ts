// Child process for the limiter's multi-process test: one "worker" that calls acquire() for one
// enterprise as fast as it can for a fixed time, then prints what it was granted as one JSON line and
// exits on its own. Configured through the environment so the parent test owns every value:
// REDIS_URL, LIMITER_PREFIX, LIMITER_ENTERPRISE, LIMITER_DURATION_MS, LIMITER_LIMIT, LIMITER_WINDOW_MS.
import { Redis } from 'ioredis';
import { createRollingWindowLimiter } from '../../src/limiter/rolling-window.ts';

export interface LimiterClientReport {
  pid: number;
  /** Grant times, ms on Redis's clock. */
  grantedAt: number[];
  denials: number;
}

function requiredEnv(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === '') throw new Error(`limiter-client: ${name} is not set`);
  return value;
}

const durationMs = Number(requiredEnv('LIMITER_DURATION_MS'));
const enterprise = requiredEnv('LIMITER_ENTERPRISE');
// No offline queue and no reconnect: if Redis goes away the child fails at once instead of hanging.
const redis = new Redis(requiredEnv('REDIS_URL'), {
  lazyConnect: true,
  enableOfflineQueue: false,
  maxRetriesPerRequest: 0,
  retryStrategy: () => null,
});
await redis.connect();
const limiter = createRollingWindowLimiter(redis, {
  keyPrefix: requiredEnv('LIMITER_PREFIX'),
  limit: Number(requiredEnv('LIMITER_LIMIT')),
  windowMs: Number(requiredEnv('LIMITER_WINDOW_MS')),
});

const report: LimiterClientReport = { pid: process.pid, grantedAt: [], denials: 0 };
const deadline = performance.now() + durationMs;
for (let attempt = 0; performance.now() < deadline; attempt++) {
  // Hammering, not sleeping retryInMs: the most requests land on Redis exactly when a slot frees,
  // which is where a non-atomic check-then-record would let a fourth grant through.
  const decision = await limiter.acquire(enterprise, `${process.pid}-${attempt}`);
  if (decision.granted) report.grantedAt.push(decision.grantedAt);
  else report.denials++;
}
await redis.quit();
process.stdout.write(`${JSON.stringify(report)}\n`);
