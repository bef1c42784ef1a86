import type { Db } from '../db/database.ts';
import { createRedis, type RedisTarget } from '../redis-connection.ts';
import type { Logger } from '../logger.ts';
import { createCallbackDispatcher, type LocalDispatch } from './callback-dispatcher.ts';
import { createCallbackMetrics } from './callback-metrics.ts';
import { createCallbackSender } from './callback-sender.ts';
import type { CallbackSettings } from './callback-settings.ts';
import { createCallbackSweeper } from './callback-sweeper.ts';
import { raiseOwedEvent, type CallbackEmitPorts } from './emit-message-event.ts';

// Composition of the callback side of a worker process with callbacks on: the dispatcher that claims
// and attempts due events, its sweeper of owed events, and its counters. Processes that only raise
// events (the API, the jobs CLI) need nothing but PostgreSQL: a raised event is a due row.

/**
 * How often a dispatcher looks for due events nobody in its process raised (the API's, retries, leases
 * run out), by default: a worker that sends raises its own sends' events and hands them over at once.
 */
const DISPATCH_INTERVAL_MS = 1_000;
/** A claimed event's lease beyond its attempt's timeout: then it is due again (its process died). */
const LEASE_MARGIN_MS = 10_000;

export interface CallbackDeliveryOptions {
  db: Db;
  logger: Logger;
  settings: CallbackSettings;
  redis: RedisTarget;
  prefix: string;
  sweeper: { intervalMs: number; graceMs: number };
  /** how often to look for due events; a process whose sends' events are raised elsewhere looks more often */
  dispatchIntervalMs?: number;
}

export interface RunningCallbackDelivery {
  /** This process's dispatcher, for the events raised here. */
  dispatch: LocalDispatch;
  stop(): Promise<void>;
}

/** What emitMessageEvent needs; `dispatch`: this process's dispatcher, when it has one. */
export function callbackEmitPorts(db: Db, logger: Logger, dispatch?: LocalDispatch): CallbackEmitPorts {
  return dispatch ? { db, logger, dispatch } : { db, logger };
}

/** Starts delivering callbacks in this process; undefined when callbacks are off (no allowed host). */
export function startCallbackDelivery(options: CallbackDeliveryOptions): RunningCallbackDelivery | undefined {
  const { settings, logger, db } = options;
  if (settings.allowedHosts.length === 0 || settings.signingSecret === undefined) return undefined;
  const sender = createCallbackSender({ allowedHosts: settings.allowedHosts, signingSecret: settings.signingSecret, timeoutMs: settings.timeoutMs });
  // Counters on a fail-fast connection: a dropped count, never a pile-up.
  const metricsRedis = createRedis(options.redis, 'command', 'user-sms-callback-metrics');
  metricsRedis.on('error', () => undefined);
  const metrics = createCallbackMetrics(metricsRedis, options.prefix);
  const dispatcher = createCallbackDispatcher(
    { db, logger, deliver: (event) => sender.deliver(event), metrics },
    {
      concurrency: settings.concurrency,
      intervalMs: options.dispatchIntervalMs ?? DISPATCH_INTERVAL_MS,
      leaseMs: settings.timeoutMs + LEASE_MARGIN_MS,
      retryBackoffMs: settings.retryBackoffMs,
      retryForS: settings.retryForS,
    },
  );
  dispatcher.start();
  const sweeper = createCallbackSweeper(
    { db, logger, raiseOwed: (owed) => raiseOwedEvent(callbackEmitPorts(db, logger, dispatcher), owed) },
    { intervalMs: options.sweeper.intervalMs, graceMs: options.sweeper.graceMs },
  );
  sweeper.start();
  logger.info({ concurrency: settings.concurrency, allowedHosts: settings.allowedHosts.length }, 'callback delivery started');
  return {
    dispatch: dispatcher,
    async stop() {
      await sweeper.stop();
      await dispatcher.stop();
      sender.close();
      await metrics.close();
      metricsRedis.disconnect();
    },
  };
}
