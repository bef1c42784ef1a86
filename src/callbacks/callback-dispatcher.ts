import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import type { AttemptResult, SignedEvent } from './callback-sender.ts';
import { claimDueHeads, recordAttempts, type AttemptRecord, type CallbackEvent } from './callback-repository.ts';

// Delivering callback events: at least once, in order per message. The rows are the queue, as for
// delivery look-ups (src/delivery/poller.ts): every worker process claims due events in batches
// (claimDueHeads: SKIP LOCKED, a lease per event), attempts them side by side, and records their
// outcomes in batches. So an event costs PostgreSQL a share of one claim and one record instead of a
// queue job and its reads and writes, and a Redis that loses its data loses no callback.
// - Only a message's oldest pending event is claimed; once it is delivered or given up, the next one
//   is due. A slow receiver delays its own message's events, never anything else, and never a send.
// - A failed attempt (no 2xx, no answer in time, a host no longer allowed) is retried after
//   retryBackoffMs, doubling each time up to an hour, within retryForS of the event's window start
//   (when it was raised, or when an operator retried it); the last attempt is made at the window's
//   end, and a failure then gives the event up. Every attempt carries the same webhook-id.
// - A process that dies mid-attempt leaves its claimed events to come back when their lease ends.

export interface CallbackDispatcherDeps {
  db: Db;
  logger: Logger;
  deliver: (event: SignedEvent) => Promise<AttemptResult>;
  metrics?: CallbackMetrics | undefined;
}

/** What monitoring counts; implementations return at once and never throw. */
export interface CallbackMetrics {
  delivered(type: string): void;
  failedAttempt(type: string): void;
  givenUp(type: string): void;
}

export interface CallbackDispatcherOptions {
  /** attempts in flight in this process (CALLBACK_CONCURRENCY) */
  concurrency: number;
  /** how often due events are looked for when nothing in this process raised one */
  intervalMs: number;
  /** a claimed event not recorded within this is due again: longer than an attempt can take */
  leaseMs: number;
  retryBackoffMs: number;
  retryForS: number;
}

/**
 * What a raiser in the same process uses to attempt its own events at once: it reserves room, raises
 * the events leased to itself when they are their message's head (callback-repository.ts insertEvent),
 * and hands those over. Saves each such event a claim: one statement and one write of its row.
 */
export interface LocalDispatch {
  /** the lease a raised event is leased to this process for */
  leaseMs: number;
  /** Room for up to `count` attempts now; returns how many were reserved. */
  reserve: (count: number) => number;
  /** Gives back reserved room that was not used. */
  release: (count: number) => void;
  /** Attempts an event raised leased to this process, in room reserved for it. */
  adopt: (event: CallbackEvent) => void;
  /** An event was raised and left due: look for due events shortly (raises close together share one look). */
  wake: () => void;
}

export interface CallbackDispatcher extends LocalDispatch {
  /** Claims what is due and fits, attempts it, records it; resolves with how many were attempted. */
  runOnce(): Promise<number>;
  start(): void;
  stop(): Promise<void>;
}

const MAX_BACKOFF_MS = 3_600_000;
/** Raises this close together share one claim: a few more ms before a callback, far fewer statements. */
const WAKE_DELAY_MS = 50;
/** Attempts that end this close together are recorded in one statement. */
const RECORD_DELAY_MS = 5;

/** The wait after the `failures`-th failed attempt. */
export function backoffAfter(failures: number, retryBackoffMs: number): number {
  const cap = Math.max(retryBackoffMs, MAX_BACKOFF_MS);
  return Math.min(cap, retryBackoffMs * 2 ** Math.min(30, Math.max(0, failures - 1)));
}

/** What one attempt's result makes of its event. */
export function attemptRecord(event: CallbackEvent, result: AttemptResult, options: Pick<CallbackDispatcherOptions, 'retryBackoffMs' | 'retryForS'>, nowMs = Date.now()): AttemptRecord {
  if (result.ok) return { eventId: event.id, outcome: 'delivered', httpStatus: result.httpStatus, error: null, nextAttemptAt: null };
  const deadlineMs = event.windowStartAt.getTime() + options.retryForS * 1000;
  const attempt = { eventId: event.id, httpStatus: result.httpStatus, error: result.reason };
  if (nowMs >= deadlineMs) return { ...attempt, outcome: 'given_up', nextAttemptAt: null };
  const nextMs = Math.min(nowMs + backoffAfter(event.attempts + 1, options.retryBackoffMs), deadlineMs);
  return { ...attempt, outcome: 'retry', nextAttemptAt: new Date(nextMs) };
}

export function createCallbackDispatcher(deps: CallbackDispatcherDeps, options: CallbackDispatcherOptions): CallbackDispatcher {
  let running = false;
  /** An event raised in this process was left due rather than leased to it: claims follow records until it is claimed. */
  let leftDue = false;
  let inFlight = 0;
  let claiming: Promise<number> | undefined;
  let claimAgain = false;
  const finished: Array<{ event: CallbackEvent; record: AttemptRecord }> = [];
  let recording: Promise<void> | undefined;
  let recordTimer: NodeJS.Timeout | undefined;
  const attempts = new Set<Promise<void>>();
  let wakeTimer: NodeJS.Timeout | undefined;
  let tickTimer: NodeJS.Timeout | undefined;

  /** Claims as many due events as there is room for and starts their attempts; one claim at a time. */
  function claim(): Promise<number> {
    if (claiming) {
      claimAgain = true;
      return claiming;
    }
    claiming = (async () => {
      let started = 0;
      do {
        claimAgain = false;
        const room = options.concurrency - inFlight;
        if (room <= 0) break;
        const events = await claimDueHeads(deps.db, { limit: room, leaseMs: options.leaseMs });
        // Nothing due and nothing in flight that could make more due: what was left due is claimed.
        if (events.length === 0 && inFlight === 0) leftDue = false;
        for (const event of events) startAttempt(event);
        started += events.length;
        // A full batch: more may be due.
        if (events.length === room) claimAgain = true;
      } while (claimAgain);
      return started;
    })().finally(() => {
      claiming = undefined;
    });
    return claiming;
  }

  /** `reserved`: its room was taken by reserve() already. */
  function startAttempt(event: CallbackEvent, reserved = false): void {
    if (!reserved) inFlight += 1;
    const attempt = deps
      .deliver({ webhookId: event.webhookId, url: event.url, body: event.body })
      .catch((error: unknown): AttemptResult => ({ ok: false, httpStatus: null, reason: `failed (${error instanceof Error ? error.name : 'error'})` }))
      .then((result) => {
        finished.push({ event, record: attemptRecord(event, result, options) });
        inFlight -= 1;
        if (inFlight === 0) void record();
        else recordTimer ??= setTimeout(() => void record(), RECORD_DELAY_MS);
      });
    attempts.add(attempt);
    void attempt.finally(() => attempts.delete(attempt));
  }

  /** Records every finished attempt in one statement per batch (then claims, while an event raised here waits behind another). */
  function record(): Promise<void> {
    clearTimeout(recordTimer);
    recordTimer = undefined;
    recording ??= (async () => {
      while (finished.length > 0) {
        const batch = finished.splice(0);
        try {
          await recordAttempts(deps.db, batch.map((b) => b.record));
          for (const { event, record } of batch) report(event, record);
        } catch (error) {
          // Their leases bring them back: attempted again, with the same webhook-id.
          deps.logger.warn({ events: batch.length, err: error instanceof Error ? error.message : String(error) }, 'callback attempts not recorded; they are attempted again when their lease ends');
        }
      }
    })().finally(() => {
      recording = undefined;
      // Attempts that ended while this batch was being closed.
      if (finished.length > 0) void record();
    });
    const done = recording;
    // Events this process left due (their message's earlier event was in flight) may be heads now.
    if (running && leftDue) void done.then(() => schedule(0));
    return done;
  }

  function report(event: CallbackEvent, record: AttemptRecord): void {
    const log = { messageId: event.messageId, eventId: event.id, type: event.type, host: hostOf(event.url), attempt: event.attempts + 1 };
    if (record.outcome === 'delivered') {
      deps.metrics?.delivered(event.type);
      // The event's row records it (npm run jobs -- callbacks --state delivered), /metrics counts it.
      deps.logger.debug({ ...log, httpStatus: record.httpStatus }, 'callback delivered');
      return;
    }
    deps.metrics?.failedAttempt(event.type);
    if (record.outcome === 'given_up') {
      deps.metrics?.givenUp(event.type);
      deps.logger.error({ ...log, reason: record.error }, 'callback given up: retry window over (npm run jobs -- callbacks)');
      return;
    }
    const retryInMs = (record.nextAttemptAt?.getTime() ?? Date.now()) - Date.now();
    deps.logger.warn({ ...log, reason: record.error, retryInMs }, 'callback not delivered; will retry');
    // This process looks again when it is due, whatever the interval.
    if (retryInMs < options.intervalMs) setTimeout(() => schedule(0), Math.max(0, retryInMs)).unref();
  }

  /** A claim in `delayMs` unless one is already due sooner. */
  function schedule(delayMs: number): void {
    if (!running || wakeTimer) return;
    wakeTimer = setTimeout(() => {
      wakeTimer = undefined;
      claim().catch((error: unknown) => deps.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'callback claim failed; will try again'));
    }, delayMs);
  }

  function tick(): void {
    schedule(0);
    tickTimer = setTimeout(tick, options.intervalMs);
  }

  /** Until every attempt under way has ended and been recorded. */
  async function settle(): Promise<void> {
    while (attempts.size > 0 || recording) {
      await Promise.all([...attempts]);
      await recording;
    }
  }

  async function runOnce(): Promise<number> {
    const started = await claim();
    await settle();
    return started;
  }

  return {
    leaseMs: options.leaseMs,
    reserve(count) {
      const room = running ? Math.max(0, Math.min(count, options.concurrency - inFlight)) : 0;
      inFlight += room;
      return room;
    },
    release(count) {
      inFlight -= count;
    },
    adopt: (event) => startAttempt(event, true),
    wake: () => {
      leftDue = true;
      schedule(WAKE_DELAY_MS);
    },
    runOnce,
    start() {
      if (running) return;
      running = true;
      tick();
    },
    async stop() {
      running = false;
      clearTimeout(wakeTimer);
      clearTimeout(tickTimer);
      wakeTimer = undefined;
      await claiming?.catch(() => undefined);
      // Attempts under way finish and are recorded; their events need no lease to come back.
      await settle();
    },
  };
}

/** Logs name the host only: a callback URL's path or query may carry the receiver's token. */
export function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return '(invalid)';
  }
}
