import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import type { AttemptResult, SignedEvent } from './callback-sender.ts';
import { findEventWithTurn, findHead, recordDelivered, recordFailedAttempt, recordGivenUp, type CallbackEvent } from './callback-repository.ts';

// Delivering one event: at least once, in order per message. Plain values in, a step out: the queue
// adapter (workers/callback-worker.ts) maps steps onto BullMQ.
// - Only the message's oldest pending event is delivered; finishing it (delivered or given up) queues
//   the next one. So a slow receiver delays its own message's events, never anything else.
// - A failed attempt (no 2xx, no answer in time, a host no longer allowed) is retried after
//   retryBackoffMs, doubling each time up to an hour, within retryForS of the event's window start
//   (when it was raised, or when an operator retried it); the last attempt is made at the window's
//   end, and a failure then gives the event up. Every attempt carries the same webhook-id.

export interface CallbackDeliveryDeps {
  db: Db;
  logger: Logger;
  deliver: (event: SignedEvent) => Promise<AttemptResult>;
  queueDelivery: (eventId: number, messageId: number) => Promise<void>;
  retryBackoffMs: number;
  retryForS: number;
  metrics?: CallbackMetrics | undefined;
}

/** What monitoring counts; implementations return at once and never throw. */
export interface CallbackMetrics {
  delivered(type: string): void;
  failedAttempt(type: string): void;
  givenUp(type: string): void;
}

export type CallbackStep =
  | { kind: 'finished'; result: 'delivered' | 'given-up' | 'not-pending' | 'not-its-turn' }
  /** attempt again after delayMs (a failed attempt, or an event run before it was due) */
  | { kind: 'wait'; delayMs: number; reason: string };

const MAX_BACKOFF_MS = 3_600_000;
/** A job woken a little early (timers, clocks of two processes) still attempts. */
const EARLY_SLACK_MS = 50;

/** The wait after the `failures`-th failed attempt. */
export function backoffAfter(failures: number, retryBackoffMs: number): number {
  const cap = Math.max(retryBackoffMs, MAX_BACKOFF_MS);
  return Math.min(cap, retryBackoffMs * 2 ** Math.min(30, Math.max(0, failures - 1)));
}

export async function deliverCallbackEvent(deps: CallbackDeliveryDeps, eventId: number): Promise<CallbackStep> {
  const event = await findEventWithTurn(deps.db, eventId);
  if (!event || event.status !== 'pending') return { kind: 'finished', result: 'not-pending' };
  // An earlier event is still on its way: it queues this one when it is done.
  if (!event.head) return { kind: 'finished', result: 'not-its-turn' };
  const dueInMs = event.nextAttemptAt.getTime() - Date.now();
  if (dueInMs > EARLY_SLACK_MS) return { kind: 'wait', delayMs: dueInMs, reason: 'not due yet' };

  const result = await deps.deliver({ webhookId: event.webhookId, url: event.url, body: event.body });
  const log = { messageId: event.messageId, eventId: event.id, type: event.type, host: hostOf(event.url), attempt: event.attempts + 1 };
  if (result.ok) {
    await recordDelivered(deps.db, event.id, { httpStatus: result.httpStatus, error: null });
    deps.metrics?.delivered(event.type);
    deps.logger.info({ ...log, httpStatus: result.httpStatus }, 'callback delivered');
    await queueNext(deps, event);
    return { kind: 'finished', result: 'delivered' };
  }

  const failures = event.attempts + 1;
  const deadlineMs = event.windowStartAt.getTime() + deps.retryForS * 1000;
  const nowMs = Date.now();
  const attempt = { httpStatus: result.httpStatus, error: result.reason };
  deps.metrics?.failedAttempt(event.type);
  if (nowMs >= deadlineMs) {
    await recordGivenUp(deps.db, event.id, attempt);
    deps.metrics?.givenUp(event.type);
    deps.logger.error({ ...log, reason: result.reason }, 'callback given up: retry window over (npm run jobs -- callbacks)');
    await queueNext(deps, event);
    return { kind: 'finished', result: 'given-up' };
  }
  const nextMs = Math.min(nowMs + backoffAfter(failures, deps.retryBackoffMs), deadlineMs);
  await recordFailedAttempt(deps.db, event.id, { ...attempt, nextAttemptAt: new Date(nextMs) });
  deps.logger.warn({ ...log, reason: result.reason, retryInMs: nextMs - nowMs }, 'callback not delivered; will retry');
  return { kind: 'wait', delayMs: nextMs - nowMs, reason: result.reason };
}

/** The message's next pending event, now that this one is done (a separate read after the write: see insertEvent). */
async function queueNext(deps: CallbackDeliveryDeps, event: CallbackEvent): Promise<void> {
  const next = await findHead(deps.db, event.messageId);
  if (next === undefined) return;
  await deps.queueDelivery(next, event.messageId).catch((error: unknown) =>
    deps.logger.warn({ messageId: event.messageId, eventId: next, err: error instanceof Error ? error.message : String(error) }, 'next callback event not queued; the callback sweeper will queue it'),
  );
}

/** Logs name the host only: a callback URL's path or query may carry the receiver's token. */
export function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return '(invalid)';
  }
}
