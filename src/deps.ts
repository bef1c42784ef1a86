import { Queue } from 'bullmq';
import type { Config } from './config.ts';
import { createDb, type Db } from './db/database.ts';
import { markWaitingForSlot } from './messages/repository.ts';
import type { Logger } from './logger.ts';
import { createEnterpriseLine, type EnterpriseLine, type JoinResult } from './line/enterprise-line.ts';
import { leaveLine, type LinePorts } from './line/turns.ts';
import { jobIdFor, SEND_JOB, SEND_QUEUE, sendJobOptions, type SendJobData } from './queue/jobs.ts';
import { wakeJob } from './queue/wake.ts';
import { createWebsmsClient, type WebsmsClient } from './websms/client.ts';
import { createRedis, waitForRedis, type RedisClient } from './redis-connection.ts';

// Builds and closes every connection. Redis connections come from src/redis-connection.ts, of two
// kinds: commands (API: fail fast, a 503 rather than a hang) and blocking (workers and event streams:
// they wait for Redis, or for the new master after a failover, and carry on).

export interface Deps {
  config: Config;
  logger: Logger;
  db: Db;
  redis: RedisClient;
  queue: Queue<SendJobData>;
  /** every enterprise's line and rolling-window limit (src/line) */
  line: EnterpriseLine;
  /** what delivery needs of the line: the line itself, waking jobs, the backstop */
  linePorts: LinePorts;
  websms: WebsmsClient;
  /** Puts the message in its enterprise's line and gives it its job (idempotent: job id = message id). */
  enqueue: (messageId: number, enterpriseNumber: string) => Promise<void>;
  /** enqueue, saying where the message stands in its line */
  enqueueInLine: (messageId: number, enterpriseNumber: string) => Promise<JoinResult>;
  /**
   * Takes a message out of its enterprise's line so the ones behind it move up (their expected send
   * times improve, and the next head is woken at its slot). For a message closed without being sent
   * (cancel, drop); harmless for one in no line.
   */
  takeOutOfLine: (messageId: number, enterpriseNumber: string) => Promise<void>;
  jobState: (messageId: number) => Promise<'missing' | 'failed' | 'alive'>;
  retryFailed: (messageId: number) => Promise<void>;
  close: () => Promise<void>;
}

export async function createDeps(config: Config, logger: Logger, role: 'api' | 'worker' | 'background'): Promise<Deps> {
  const db = createDb(config.databaseUrl, {
    max: config.databasePoolSize,
    applicationName: `user-sms-${role}`,
  });
  const redis = createRedis(config.redis, role === 'api' ? 'command' : 'blocking', `user-sms-${role}`);
  redis.on('error', (error: Error) => logger.warn({ err: error.message }, 'redis connection error'));
  await waitForRedis(redis, config.redis);

  const queue = new Queue<SendJobData>(SEND_QUEUE, { connection: redis, prefix: config.queuePrefix });
  queue.on('error', () => undefined); // surfaced through the calls that fail
  const line = createEnterpriseLine(redis, {
    keyPrefix: config.queuePrefix,
    limit: config.rateLimit.perWindow,
    windowMs: config.rateLimit.windowMs,
    marginMs: config.rateLimit.marginMs,
    // A live call always ends its own turn within the WebSMS budget; a dead worker's turn lapses after this.
    turnTtlMs: config.websms.timeoutMs + 15_000,
    grantReplication: config.grantReplication,
  });
  const websms = createWebsmsClient({ baseUrl: config.websms.baseUrl, timeoutMs: config.websms.timeoutMs, method: config.websms.method });
  const policy = { sendAttempts: config.worker.sendAttempts, retryBackoffMs: config.worker.retryBackoffMs, keepFinishedJobsS: config.keepFinishedJobsS };
  // A waiting job is woken by the send before it; its own timer, one window later than its slot, only
  // matters when that wake never came.
  const backstopMs = config.rateLimit.windowMs + config.rateLimit.marginMs;
  const wake = (messageId: number, inMs: number) => wakeJob(queue, messageId, inMs);

  async function enqueue(messageId: number, enterpriseNumber: string): Promise<JoinResult> {
    const place = await line.join(enterpriseNumber, messageId);
    const delay = Math.max(0, place.slotInMs) + (place.wakesItself ? 0 : backstopMs);
    await queue.add(SEND_JOB, { messageId, enterpriseNumber }, { ...sendJobOptions(messageId, policy), delay });
    // Waiting for its turn: the row says so, and until when (operators and `jobs list` read it there).
    // Only a note: the message is queued whether or not PostgreSQL takes it now.
    if (delay > 0) {
      await markWaitingForSlot(db, messageId, new Date(Math.max(Date.now(), place.etaMs))).catch((error: unknown) =>
        logger.warn({ messageId, err: error instanceof Error ? error.message : String(error) }, 'could not note the expected send time on the row'),
      );
    }
    if (!place.wakesItself) {
      // The send before it may have ended between the join and the add, and found no job to wake.
      const head = await line.headToWake(enterpriseNumber);
      if (head?.messageId === messageId) await wake(messageId, head.inMs);
    }
    return place;
  }
  const linePorts: LinePorts = { db, logger, line, wake, enqueue, backstopMs };

  return {
    config,
    logger,
    db,
    redis,
    queue,
    line,
    linePorts,
    websms,
    async enqueue(messageId, enterpriseNumber) {
      await enqueue(messageId, enterpriseNumber);
    },
    enqueueInLine: enqueue,
    takeOutOfLine: (messageId, enterpriseNumber) => leaveLine(linePorts, enterpriseNumber, messageId),
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
