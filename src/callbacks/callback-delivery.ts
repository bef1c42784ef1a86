import type { Db } from '../db/database.ts';
import { createRedis, type RedisTarget } from '../redis-connection.ts';
import type { Logger } from '../logger.ts';
import { createCallbackDispatcher, type LocalDispatch } from './callback-dispatcher.ts';
import { createCallbackMetrics } from './callback-metrics.ts';
import { createCallbackSender } from './callback-sender.ts';
import type { CallbackSettings } from './callback-settings.ts';
import { raiseOwedEvents, type CallbackEmitPorts } from './emit-message-event.ts';
import { createOwedEventRaiser } from './owed-event-raiser.ts';

// Composition of the callback side of the background work with callbacks on: the raiser of owed
// events, the dispatcher that claims and attempts due events, and its counters. Processes that only
// change messages (the API, the send workers, the jobs CLI) need nothing but PostgreSQL: a change
// leaves its event owed, and a raised event is a due row.

/**
 * How often the raiser looks for owed events (every send's message.sent is one), and the dispatcher for
 * due events raised elsewhere (the API's, retries, leases run out); events the raiser raises are
 * handed to its own dispatcher at once.
 */
const LOOK_INTERVAL_MS = 200;
/** A claimed event's lease beyond its attempt's timeout: then it is due again (its process died). */
const LEASE_MARGIN_MS = 10_000;

export interface CallbackDeliveryOptions {
  db: Db;
  logger: Logger;
  settings: CallbackSettings;
  redis: RedisTarget;
  prefix: string;
  /** how often to look for owed and due events (default LOOK_INTERVAL_MS) */
  intervalMs?: number;
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
      intervalMs: options.intervalMs ?? LOOK_INTERVAL_MS,
      leaseMs: settings.timeoutMs + LEASE_MARGIN_MS,
      retryBackoffMs: settings.retryBackoffMs,
      retryForS: settings.retryForS,
    },
  );
  dispatcher.start();
  const raiser = createOwedEventRaiser(
    { db, logger, raise: (owed) => raiseOwedEvents(callbackEmitPorts(db, logger, dispatcher), owed) },
    { intervalMs: options.intervalMs ?? LOOK_INTERVAL_MS },
  );
  raiser.start();
  logger.info({ concurrency: settings.concurrency, allowedHosts: settings.allowedHosts.length }, 'callback delivery started');
  return {
    dispatch: dispatcher,
    async stop() {
      await raiser.stop();
      await dispatcher.stop();
      sender.close();
      await metrics.close();
      metricsRedis.disconnect();
    },
  };
}
