import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import type { AttemptResult, SignedEvent } from './callback-sender.ts';
import { claimDueHeads, recordAttempts, releaseLeases, type AttemptRecord, type CallbackEvent } from './callback-repository.ts';

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
  /** events raised leased to this process that may wait for room, beyond `concurrency` (default 500) */
  localBacklog?: number;
  /** how long such an event may wait for room before its lease is given back (default 30 s) */
  localWaitMs?: number;
  /** how often due events are looked for when nothing in this process raised one */
  intervalMs: number;
  /** a claimed event not recorded within this is due again: longer than an attempt can take */
  leaseMs: number;
  retryBackoffMs: number;
  retryForS: number;
  /** how long finished attempts may gather before they are recorded (default RECORD_DELAY_MS) */
  recordDelayMs?: number;
}

/**
 * What a raiser in the same process uses to attempt its own events at once: it reserves room, raises
 * the events leased to itself when they are their message's head (callback-repository.ts insertEvent),
 * and hands those over. Saves each such event a claim: one statement and one write of its row.
 * The room is more than the attempts in flight: events handed over while every attempt slot is busy
 * wait in this process for one (a raiser's batch is hundreds of events, the slots a few dozen), and
 * one that cannot start within localWaitMs has its lease given back, to be claimed like any other.
 */
export interface LocalDispatch {
  /**
   * Room for up to `count` events now: the lease to raise each reserved one with, in order. The first
   * get a free attempt slot and an attempt's lease; the rest wait for a slot, and their lease covers
   * the wait (so that a process that dies brings back the first ones as soon as it would have anyway).
   */
  reserve: (count: number) => number[];
  /** Gives back reserved room that was not used: the leases reserve() named for it. */
  release: (leasesMs: readonly number[]) => void;
  /** Attempts an event raised leased to this process for `leaseMs` (from reserve), in room reserved for it. */
  adopt: (event: CallbackEvent, leaseMs: number) => void;
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
/**
 * Attempts that end within this of the first one not yet recorded are recorded in one statement, so
 * that a steady stream of callbacks costs PostgreSQL a statement every RECORD_DELAY_MS, not one per
 * few attempts. It delays only the row's update (the receiver has its answer) and the claim of the
 * message's next event; a process that dies meanwhile has its events attempted again, as ever.
 */
const RECORD_DELAY_MS = 50;
/** A batch this large is recorded without waiting for the delay. */
const RECORD_BATCH = 200;
/** Events raised leased to this process that wait for an attempt slot (a raiser's batch at most). */
const LOCAL_BACKLOG = 500;
const LOCAL_WAIT_MS = 30_000;

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
  const localBacklog = options.localBacklog ?? LOCAL_BACKLOG;
  // At least 1 ms: a lease longer than an attempt's is what tells an event leased for the wait.
  const localWaitMs = Math.max(1, options.localWaitMs ?? LOCAL_WAIT_MS);
  const recordDelayMs = options.recordDelayMs ?? RECORD_DELAY_MS;
  let running = false;
  /** An event raised in this process was left due rather than leased to it: claims follow records until it is claimed. */
  let leftDue = false;
  /** attempts under way */
  let inFlight = 0;
  /**
   * Room reserved by a raiser and not yet handed over or given back: attempt slots promised to events
   * leased for an attempt (nothing else may take them meanwhile, or such an event would find none),
   * and places in the wait for those leased for the wait.
   */
  let promisedSlots = 0;
  let reservedWaits = 0;
  /** events raised leased to this process, waiting for an attempt slot, oldest first */
  const waiting: Array<{ event: CallbackEvent; startBy: number }> = [];
  let releasing: Promise<void> | undefined;
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
        // Events handed over by a raiser go first: they are leased to this process already.
        const room = options.concurrency - inFlight - waiting.length - promisedSlots - reservedWaits;
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

  function startAttempt(event: CallbackEvent): void {
    inFlight += 1;
    const attempt = deps
      .deliver({ webhookId: event.webhookId, url: event.url, body: event.body })
      .catch((error: unknown): AttemptResult => ({ ok: false, httpStatus: null, reason: `failed (${error instanceof Error ? error.name : 'error'})` }))
      .then((result) => {
        finished.push({ event, record: attemptRecord(event, result, options) });
        inFlight -= 1;
        startWaiting();
        recordSoon();
      });
    attempts.add(attempt);
    void attempt.finally(() => attempts.delete(attempt));
  }

  /**
   * Records the finished attempts now when nothing else is under way (so that `settle` ends with every
   * outcome recorded) or the batch is full, else once the record delay has gathered more.
   */
  function recordSoon(): void {
    if (finished.length === 0 || recording) return; // a recording under way looks again when it ends
    if (inFlight === 0 || finished.length >= RECORD_BATCH) void record();
    else recordTimer ??= setTimeout(() => void record(), recordDelayMs);
  }

  /** Records every finished attempt in one statement (then claims, while an event raised here waits behind another). */
  function record(): Promise<void> {
    clearTimeout(recordTimer);
    recordTimer = undefined;
    recording ??= (async () => {
      const batch = finished.splice(0);
      try {
        await recordAttempts(deps.db, batch.map((b) => b.record));
        for (const { event, record } of batch) report(event, record);
      } catch (error) {
        // Their leases bring them back: attempted again, with the same webhook-id.
        deps.logger.warn({ events: batch.length, err: error instanceof Error ? error.message : String(error) }, 'callback attempts not recorded; they are attempted again when their lease ends');
      }
    })().finally(() => {
      recording = undefined;
      // Attempts that ended while this batch was being recorded.
      recordSoon();
    });
    const done = recording;
    // Events this process left due (their message's earlier event was in flight) may be heads now.
    if (running && leftDue) void done.then(() => schedule(0));
    return done;
  }

  /** Starts waiting events while there are free slots; gives back the lease of those that waited too long. */
  function startWaiting(): void {
    const late: CallbackEvent[] = [];
    while (inFlight + promisedSlots < options.concurrency && waiting.length > 0) {
      const { event, startBy } = waiting.shift()!;
      if (Date.now() > startBy) late.push(event);
      else startAttempt(event);
    }
    if (late.length > 0) {
      deps.logger.warn({ events: late.length, waitedMs: localWaitMs }, 'callback events waited too long for an attempt slot; their leases are given back');
      giveBack(late);
    }
  }

  /** Makes events leased to this process due now, for any process to claim (else their leases bring them back). */
  function giveBack(events: readonly CallbackEvent[]): void {
    const ids = events.map((e) => e.id);
    const run = (releasing ?? Promise.resolve()).then(
      () => releaseLeases(deps.db, ids).then(() => (running ? schedule(0) : undefined)),
    ).catch((error: unknown) => {
      deps.logger.warn({ events: ids.length, err: error instanceof Error ? error.message : String(error) }, 'callback leases not given back; the events are attempted when their leases end');
    });
    releasing = run;
    void run.finally(() => {
      if (releasing === run) releasing = undefined;
    });
  }

  function report(event: CallbackEvent, record: AttemptRecord): void {
    const log = () => ({ messageId: event.messageId, eventId: event.id, type: event.type, host: hostOf(event.url), attempt: event.attempts + 1 });
    if (record.outcome === 'delivered') {
      deps.metrics?.delivered(event.type);
      // The event's row records it (npm run jobs -- callbacks --state delivered), /metrics counts it.
      // The line is made only when it is logged: parsing the URL for its host is the dearest part of this.
      if (deps.logger.isLevelEnabled('debug')) deps.logger.debug({ ...log(), httpStatus: record.httpStatus }, 'callback delivered');
      return;
    }
    deps.metrics?.failedAttempt(event.type);
    if (record.outcome === 'given_up') {
      deps.metrics?.givenUp(event.type);
      deps.logger.error({ ...log(), reason: record.error }, 'callback given up: retry window over (npm run jobs -- callbacks)');
      return;
    }
    const retryInMs = (record.nextAttemptAt?.getTime() ?? Date.now()) - Date.now();
    deps.logger.warn({ ...log(), reason: record.error, retryInMs }, 'callback not delivered; will retry');
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

  /** Until every attempt under way has ended and been recorded, and every lease to give back given back. */
  async function settle(): Promise<void> {
    while (attempts.size > 0 || recording || releasing) {
      await Promise.all([...attempts]);
      await recording;
      await releasing;
    }
  }

  async function runOnce(): Promise<number> {
    const started = await claim();
    await settle();
    return started;
  }

  return {
    reserve(count) {
      if (!running) return [];
      const reserved = promisedSlots + reservedWaits;
      const free = Math.max(0, options.concurrency - inFlight - waiting.length - reserved);
      const room = Math.max(0, Math.min(count, options.concurrency + localBacklog - inFlight - waiting.length - reserved));
      const slots = Math.min(free, room);
      promisedSlots += slots;
      reservedWaits += room - slots;
      return Array.from({ length: room }, (_, i) => (i < slots ? options.leaseMs : options.leaseMs + localWaitMs));
    },
    release(leasesMs) {
      for (const leaseMs of leasesMs) {
        if (leaseMs > options.leaseMs) reservedWaits -= 1;
        else promisedSlots -= 1;
      }
      // A promised slot given back may be a waiting event's.
      if (running) startWaiting();
    },
    adopt(event, leaseMs) {
      const mayWaitMs = leaseMs - options.leaseMs;
      if (mayWaitMs <= 0) {
        // Leased for an attempt: its slot was kept for it. It starts now (given back if stopping).
        promisedSlots -= 1;
        if (running && inFlight < options.concurrency) startAttempt(event);
        else giveBack([event]);
        return;
      }
      reservedWaits -= 1;
      if (running && waiting.length === 0 && inFlight + promisedSlots < options.concurrency) startAttempt(event);
      else if (running) waiting.push({ event, startBy: Date.now() + mayWaitMs });
      else giveBack([event]);
    },
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
      // Waiting events are given back to be claimed at once, by the next process to look.
      if (waiting.length > 0) giveBack(waiting.splice(0).map((w) => w.event));
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
