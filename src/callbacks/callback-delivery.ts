import { Queue } from 'bullmq';
import type { Db } from '../db/database.ts';
import { createRedis, type RedisClient, type RedisTarget } from '../redis-connection.ts';
import type { Logger } from '../logger.ts';
import { createCallbackWorker } from '../../workers/callback-worker.ts';
import { CALLBACK_QUEUE, queueCallbackDeliveries, queueCallbackDelivery, requeueCallbackDelivery, type CallbackJobData } from './callback-jobs.ts';
import { createCallbackMetrics } from './callback-metrics.ts';
import { createCallbackSender } from './callback-sender.ts';
import type { CallbackSettings } from './callback-settings.ts';
import { createCallbackSweeper } from './callback-sweeper.ts';
import { raiseOwedEvent, type CallbackEmitPorts } from './emit-message-event.ts';

// Composition of the callback side of a process: the queue every process that raises events needs,
// and, in worker processes with callbacks on, the delivery worker, its sweeper and its counters.

export function createCallbackQueue(redis: RedisClient, prefix: string): Queue<CallbackJobData> {
  const queue = new Queue<CallbackJobData>(CALLBACK_QUEUE, { connection: redis, prefix });
  queue.on('error', () => undefined); // surfaced through the calls that fail
  return queue;
}

/** What emitMessageEvent needs, over a callback queue. */
export function callbackEmitPorts(db: Db, logger: Logger, queue: Queue<CallbackJobData>): CallbackEmitPorts {
  return {
    db,
    logger,
    queueDelivery: (eventId, messageId) => queueCallbackDelivery(queue, eventId, messageId),
    queueDeliveries: (events) => queueCallbackDeliveries(queue, events),
  };
}

export interface CallbackDeliveryOptions {
  db: Db;
  logger: Logger;
  queue: Queue<CallbackJobData>;
  settings: CallbackSettings;
  redis: RedisTarget;
  prefix: string;
  sweeper: { intervalMs: number; graceMs: number };
}

export interface RunningCallbackDelivery {
  stop(): Promise<void>;
}

/** Starts delivering callbacks in this process; undefined when callbacks are off (no allowed host). */
export async function startCallbackDelivery(options: CallbackDeliveryOptions): Promise<RunningCallbackDelivery | undefined> {
  const { settings, logger, db, queue } = options;
  if (settings.allowedHosts.length === 0 || settings.signingSecret === undefined) return undefined;
  const sender = createCallbackSender({ allowedHosts: settings.allowedHosts, signingSecret: settings.signingSecret, timeoutMs: settings.timeoutMs });
  // Blocking commands need their own connection; counters a fail-fast one (a dropped count, never a pile-up).
  const workerRedis = createRedis(options.redis, 'blocking', 'user-sms-callbacks');
  workerRedis.on('error', () => undefined);
  const metricsRedis = createRedis(options.redis, 'command', 'user-sms-callback-metrics');
  metricsRedis.on('error', () => undefined);
  const worker = createCallbackWorker(
    {
      db,
      logger,
      deliver: (event) => sender.deliver(event),
      queueDelivery: (eventId, messageId) => queueCallbackDelivery(queue, eventId, messageId),
      retryBackoffMs: settings.retryBackoffMs,
      retryForS: settings.retryForS,
      metrics: createCallbackMetrics(metricsRedis, options.prefix),
    },
    { connection: workerRedis, prefix: options.prefix, concurrency: settings.concurrency },
  );
  worker.on('error', (error) => logger.warn({ err: error.message }, 'callback worker error'));
  await worker.waitUntilReady();
  const sweeper = createCallbackSweeper(
    { db, logger, requeue: (eventId, messageId) => requeueCallbackDelivery(queue, eventId, messageId), raiseOwed: (owed) => raiseOwedEvent(callbackEmitPorts(db, logger, queue), owed) },
    { intervalMs: options.sweeper.intervalMs, graceMs: options.sweeper.graceMs },
  );
  sweeper.start();
  logger.info({ concurrency: settings.concurrency, allowedHosts: settings.allowedHosts.length }, 'callback delivery started');
  return {
    async stop() {
      await sweeper.stop();
      await worker.close();
      sender.close();
      workerRedis.disconnect();
      metricsRedis.disconnect();
    },
  };
}
