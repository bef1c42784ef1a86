import { once } from 'node:events';
import { Queue } from 'bullmq';
import { Redis, type RedisOptions } from 'ioredis';
import type { Config } from './config.ts';
import { createDb, type Db } from './db/database.ts';
import type { Logger } from './logger.ts';
import { createRollingWindowLimiter, type RollingWindowLimiter } from './limiter/rolling-window.ts';
import { jobIdFor, SEND_JOB, SEND_QUEUE, sendJobOptions, type SendJobData } from './queue/jobs.ts';
import { createWebsmsClient, type WebsmsClient } from './websms/client.ts';

// Builds and closes every connection. Two kinds of Redis connection, on purpose:
// - commands (API): no offline queue and a command timeout, so a Redis outage is a fast 503, never
//   a request hanging on a reconnect;
// - workers and event streams: unlimited retries (BullMQ requires it for blocking commands), they
//   simply resume when Redis is back.

export function redisOptions(kind: 'command' | 'blocking'): RedisOptions {
  return kind === 'command'
    ? { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 3_000, connectTimeout: 3_000 }
    : { maxRetriesPerRequest: null, enableReadyCheck: true, connectTimeout: 3_000 };
}

export interface Deps {
  config: Config;
  logger: Logger;
  db: Db;
  redis: Redis;
  queue: Queue<SendJobData>;
  limiter: RollingWindowLimiter;
  websms: WebsmsClient;
  enqueue: (messageId: number, enterpriseNumber: string) => Promise<void>;
  jobState: (messageId: number) => Promise<'missing' | 'failed' | 'alive'>;
  retryFailed: (messageId: number) => Promise<void>;
  close: () => Promise<void>;
}

export async function createDeps(config: Config, logger: Logger, role: 'api' | 'worker'): Promise<Deps> {
  const db = createDb(config.databaseUrl, {
    max: config.databasePoolSize,
    applicationName: `user-sms-${role}`,
  });
  const redis = new Redis(config.redisUrl, redisOptions(role === 'api' ? 'command' : 'blocking'));
  redis.on('error', (error: Error) => logger.warn({ err: error.message }, 'redis connection error'));
  await waitForRedis(redis, config.redisUrl);

  const queue = new Queue<SendJobData>(SEND_QUEUE, { connection: redis, prefix: config.queuePrefix });
  queue.on('error', () => undefined); // surfaced through the calls that fail
  const limiter = createRollingWindowLimiter(redis, {
    keyPrefix: config.queuePrefix,
    limit: config.rateLimit.perWindow,
    windowMs: config.rateLimit.windowMs,
    marginMs: config.rateLimit.marginMs,
  });
  const websms = createWebsmsClient({ baseUrl: config.websms.baseUrl, timeoutMs: config.websms.timeoutMs, method: config.websms.method });
  const policy = { sendAttempts: config.worker.sendAttempts, retryBackoffMs: config.worker.retryBackoffMs, keepFinishedJobsS: config.keepFinishedJobsS };

  return {
    config,
    logger,
    db,
    redis,
    queue,
    limiter,
    websms,
    async enqueue(messageId, enterpriseNumber) {
      await queue.add(SEND_JOB, { messageId, enterpriseNumber }, sendJobOptions(messageId, policy));
    },
    async jobState(messageId) {
      const state = await queue.getJobState(jobIdFor(messageId));
      return state === 'unknown' ? 'missing' : state === 'failed' ? 'failed' : 'alive';
    },
    async retryFailed(messageId) {
      await (await queue.getJob(jobIdFor(messageId)))?.retry('failed', { resetAttemptsMade: true, resetAttemptsStarted: false });
    },
    async close() {
      websms.close();
      await queue.close().catch(() => undefined);
      redis.disconnect();
      await db.destroy();
    },
  };
}

async function waitForRedis(redis: Redis, url: string): Promise<void> {
  if (redis.status === 'ready') return;
  const timeout = AbortSignal.timeout(10_000);
  try {
    await once(redis, 'ready', { signal: timeout });
  } catch {
    redis.disconnect();
    throw new Error(`Redis is not reachable at ${redactUrl(url)} (REDIS_URL)`);
  }
}

/** Connection URLs may carry passwords: never print them. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(invalid URL)';
  }
}
