import { randomUUID } from 'node:crypto';
import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import { maskPhone } from '../logger.ts';
import { endTurn, leaveLine, takeTurn, type LinePorts } from '../line/turns.ts';
import type { LookupOutcome, SendOutcome, WebsmsClient, WebsmsCredentials } from '../websms/client.ts';
import { findEnterprise, notFoundMessage } from '../enterprises/repository.ts';
import { parseCustomDomain } from '../enterprises/credentials.ts';
import { recordOutcome, type DeliveryOutcome } from './message.ts';
import {
  claimForSending,
  findMessage,
  findSendingState,
  markWaitingForSlot,
  recordAccepted,
  recordFailed,
  recordUnknown,
  releaseForResend,
  type Acceptance,
  type ClaimedMessage,
  type Failure,
} from './repository.ts';
import { sendPhase } from '../metrics/send-phases.ts';

// Delivering one message: take its turn in its enterprise's line (src/line: order and rate limit), claim
// the row, call WebSMS, end the turn, record the outcome.
// Plain values in, a DeliveryStep out: the queue adapter (workers/) maps steps onto BullMQ.
//
// Retry safety (websms-api.md): an explicit WebSMS error is final except codes 1 and 7; a failure
// that certainly never reached WebSMS is retried; an unknown outcome is looked up by our unique
// reference before anything is resent, and never resent blindly.

export interface DeliveryDeps {
  db: Db;
  websms: WebsmsClient;
  /** the enterprise's line: one send at a time, in order, within the rolling-window limit */
  line: LinePorts;
  logger: Logger;
  defaultSender: string;
  /** WebSMS call budget; a row `sending` for longer than this plus a grace has no live call. */
  websmsTimeoutMs: number;
  /** When an accepted message's delivery status is first asked (DELIVERY_POLL_SCHEDULE_MS's first delay); absent: the poller schedules it. */
  firstDeliveryCheckAfterMs?: number | undefined;
  /** Monitoring counters (src/metrics); absent in tests that do not look at them. */
  metrics?: DeliveryMetrics | undefined;
}

export type SendOutcomeLabel = 'success' | 'failed' | 'unknown' | 'retry' | 'unconfirmed';

/**
 * What monitoring learns from a delivery, counted where its one log line is written. Implementations
 * return at once and never throw: a send must never wait for, or fail because of, a counter.
 * Labels are enterprise numbers and outcomes only, never a phone, a text or a key.
 */
export interface DeliveryMetrics {
  /**
   * A send attempt ended. Final for the message: success, failed, unknown (could not be checked; an
   * operator decides). Not final: retry (certainly not sent, will be resent), unconfirmed (the answer
   * was lost; the lookup that follows is counted again as what it finds).
   */
  sendOutcome(enterpriseNumber: string, outcome: SendOutcomeLabel): void;
  /** One WebSMS send call took durationMs and ended this way. */
  websmsCall(durationMs: number, result: SendOutcome['kind']): void;
  /** The line (its enterprise's rate limit and the messages before it) made a message wait waitMs for its turn. */
  limiterWait(waitMs: number): void;
}

export interface DeliveryAttempt {
  messageId: number;
  enterpriseNumber: string;
  /** No further run follows a retryable failure of this one. */
  lastAttempt: boolean;
  /** The job's first run: the row is certainly not `sending` yet, so its state need not be read. */
  firstRun: boolean;
  /** How long the message has waited in its enterprise's line before this first attempt (0: it did not). */
  waitedInLineMs?: number | undefined;
  /** An acceptance from an earlier run whose recording failed (PostgreSQL was down). */
  stashedAcceptance?: Acceptance | undefined;
  /** Keeps an acceptance for the next run when it cannot be recorded now. */
  stashAcceptance(acceptance: Acceptance): Promise<void>;
}

export type DeliveryStep =
  | { kind: 'finished'; outcome: DeliveryOutcome | null }
  /** Come back after delayMs without using a retry attempt (rate limit, a call possibly in flight). */
  | { kind: 'wait'; delayMs: number; reason: string }
  /** Run again after the retry backoff, using an attempt. */
  | { kind: 'retry'; reason: string };

/** After our own call times out, WebSMS may still be processing it: look it up only after this. */
const RECONCILE_GRACE_MS = 1_000;

export async function deliverMessage(deps: DeliveryDeps, attempt: DeliveryAttempt): Promise<DeliveryStep> {
  const { db } = deps;
  const id = attempt.messageId;

  if (attempt.stashedAcceptance) {
    await recordAccepted(db, id, attempt.stashedAcceptance);
    return finishedFromRow(deps, id);
  }

  if (!attempt.firstRun) {
    // A re-run may find the row mid-send (a worker died, or the outcome was unknown): that needs a
    // lookup, not a rate-limit slot.
    const state = await findSendingState(db, id);
    if (!state) return missingRow(deps, id);
    if (state.status === 'sending') return reconcile(deps, attempt, state.claimedAt, state.providerRef);
    if (state.status !== 'pending' && state.status !== 'queued') {
      // Finished elsewhere (an operator, a cancel): it must not hold up its line.
      await leaveLine(deps.line, attempt.enterpriseNumber, id);
      return finishedFromRow(deps, id);
    }
  }

  // Every attempt takes a turn and a grant, because WebSMS counts attempts. Redis down: this throws
  // and nothing is sent (fail closed), never an over-limit burst.
  const turn = await takeTurn(deps.line, attempt.enterpriseNumber, id, `${id}:${randomUUID()}`);
  sendPhase({ phase: 'turn-taken', messageId: id });
  if (turn.kind === 'wait') {
    // A wait found only now (the message was queued with no delay, or woke before its turn) is a
    // wait too; one planned at enqueue is counted when the message runs (waitedInLineMs below).
    if (!attempt.waitedInLineMs) deps.metrics?.limiterWait(turn.delayMs);
    await markWaitingForSlot(db, id, new Date(Math.max(Date.now(), turn.etaMs)));
    return { kind: 'wait', delayMs: turn.delayMs, reason: turn.reason };
  }
  if (turn.kind === 'not-waiting') {
    const state = await findSendingState(db, id);
    if (!state) return missingRow(deps, id);
    if (state.status === 'sending') return reconcile(deps, attempt, state.claimedAt, state.providerRef);
    return finishedFromRow(deps, id);
  }

  if (attempt.waitedInLineMs) deps.metrics?.limiterWait(attempt.waitedInLineMs);

  const claimed = await claimForSending(db, id);
  sendPhase({ phase: 'claimed', messageId: id });
  if (!claimed) {
    // No call made: the turn passes on.
    await leaveLine(deps.line, attempt.enterpriseNumber, id);
    const state = await findSendingState(db, id);
    if (!state) return missingRow(deps, id);
    if (state.status === 'sending') return reconcile(deps, attempt, state.claimedAt, state.providerRef);
    return finishedFromRow(deps, id);
  }

  const credentials = parseCustomDomain(claimed.customDomain);
  if (!credentials || claimed.enterpriseActive === false) {
    // Configuration removed between acceptance and sending.
    await leaveLine(deps.line, attempt.enterpriseNumber, id);
    deps.metrics?.sendOutcome(claimed.enterpriseNumber, 'failed');
    return fail(deps, claimed, { code: 'not_configured', message: notFoundMessage(claimed.enterpriseNumber) });
  }

  const callStartedMs = performance.now();
  // The call is over, whatever it answered: the next message of the enterprise may go at its slot.
  // Should Redis not answer now, the turn lapses by itself (turnTtlMs); the outcome must still be recorded.
  const endTheTurn = () =>
    endTurn(deps.line, attempt.enterpriseNumber, id).catch((error: unknown) =>
      deps.logger.warn({ messageId: id, err: error instanceof Error ? error.message : String(error) }, 'could not end the turn in the line; it lapses by itself'),
    );
  let outcome: SendOutcome;
  try {
    outcome = await deps.websms.send(credentials, {
      msisdn: claimed.phone.replace(/^\+/, ''),
      text: claimed.text,
      sender: claimed.sender ?? deps.defaultSender,
      customId: claimed.providerRef,
    });
  } catch (error) {
    await endTheTurn();
    throw error;
  }
  sendPhase({ phase: 'websms-answered', messageId: id });
  deps.metrics?.websmsCall(performance.now() - callStartedMs, outcome.kind);
  // The turn's end (Redis) and the outcome's record (PostgreSQL) depend on nothing of each other: made
  // at once, they cost the send one hop less. Both are done before the run ends, so a retry or the
  // line's next run never finds this turn still open.
  const turnEnded = endTheTurn();
  let step: DeliveryStep;
  try {
    step = await settle(deps, attempt, claimed, credentials, outcome);
  } finally {
    await turnEnded;
  }
  sendPhase({ phase: 'recorded', messageId: id });
  return step;
}

async function settle(
  deps: DeliveryDeps,
  attempt: DeliveryAttempt,
  claimed: ClaimedMessage,
  credentials: WebsmsCredentials,
  outcome: SendOutcome,
): Promise<DeliveryStep> {
  const log = { messageId: claimed.id, enterprise: claimed.enterpriseNumber, phone: maskPhone(claimed.phone), attempt: claimed.attempts };
  switch (outcome.kind) {
    case 'accepted': {
      const acceptance: Acceptance = {
        websmsMessageId: outcome.messageId,
        price: outcome.price,
        parts: outcome.parts,
        amount: outcome.amount,
        response: outcome.response,
      };
      deps.logger.info({ ...log, outcome: 'success', websmsMessageId: outcome.messageId, parts: outcome.parts }, 'sms sent');
      deps.metrics?.sendOutcome(claimed.enterpriseNumber, 'success');
      try {
        await recordAccepted(deps.db, claimed.id, acceptance, deps.firstDeliveryCheckAfterMs);
      } catch (error) {
        // Sent and paid for: the result must not be lost, nor the message resent.
        await attempt.stashAcceptance(acceptance);
        throw error;
      }
      return {
        kind: 'finished',
        outcome: { status: 'success', websmsMessageId: outcome.messageId, price: outcome.price, parts: outcome.parts, amount: outcome.amount, error: null },
      };
    }
    case 'rejected': {
      const failure: Failure = {
        code: `websms_${outcome.code}`,
        message: scrub(`WebSMS error ${outcome.code}: ${outcome.description}`, credentials),
        response: outcome.response,
      };
      if (!outcome.retryable) {
        deps.logger.warn({ ...log, outcome: 'failed', code: failure.code }, 'sms rejected by WebSMS');
        deps.metrics?.sendOutcome(claimed.enterpriseNumber, 'failed');
        return fail(deps, claimed, failure);
      }
      return resendLater(deps, attempt, claimed, failure, log);
    }
    case 'not-sent':
      return resendLater(deps, attempt, claimed, { code: 'not_sent', message: scrub(`WebSMS unreachable: ${outcome.reason}`, credentials) }, log);
    case 'unknown':
      // Maybe sent. Leave the row `sending`; the next run looks it up once no call can be in flight.
      deps.logger.warn({ ...log, outcome: 'unknown', reason: scrub(outcome.reason, credentials) }, 'sms outcome unknown; will look it up');
      deps.metrics?.sendOutcome(claimed.enterpriseNumber, 'unconfirmed');
      return { kind: 'wait', delayMs: deps.websmsTimeoutMs + RECONCILE_GRACE_MS, reason: 'outcome unknown' };
  }
}

/** Certainly not sent: back to the queue, or failed for good once the attempts are spent. */
async function resendLater(
  deps: DeliveryDeps,
  attempt: DeliveryAttempt,
  claimed: { id: number; enterpriseNumber: string },
  failure: Failure,
  log: Record<string, unknown>,
  afterUnknown = false,
): Promise<DeliveryStep> {
  if (attempt.lastAttempt) {
    deps.logger.warn({ ...log, outcome: 'failed', code: failure.code }, 'sms not sent; attempts exhausted');
    deps.metrics?.sendOutcome(claimed.enterpriseNumber, 'failed');
    return fail(deps, claimed, failure);
  }
  deps.logger.info({ ...log, outcome: 'retry', code: failure.code }, 'sms not sent; will retry');
  deps.metrics?.sendOutcome(claimed.enterpriseNumber, 'retry');
  await releaseForResend(deps.db, claimed.id, failure, afterUnknown);
  return { kind: 'retry', reason: failure.message };
}

async function fail(deps: DeliveryDeps, claimed: { id: number }, failure: Failure): Promise<DeliveryStep> {
  await recordFailed(deps.db, claimed.id, failure);
  return finishedFromRow(deps, claimed.id);
}

/**
 * A row left `sending`: a worker died mid-call, or the call's outcome was unknown. Look the message
 * up by our reference; resend only if WebSMS has never seen it.
 */
async function reconcile(
  deps: DeliveryDeps,
  attempt: DeliveryAttempt,
  claimedAt: Date | null,
  providerRef: string | null,
): Promise<DeliveryStep> {
  const id = attempt.messageId;
  const sinceClaimMs = claimedAt ? Date.now() - claimedAt.getTime() : Infinity;
  const quietAfterMs = deps.websmsTimeoutMs + RECONCILE_GRACE_MS;
  if (sinceClaimMs < quietAfterMs) {
    // Another run may still be waiting for WebSMS on this very message (a stalled-job false alarm).
    return { kind: 'wait', delayMs: quietAfterMs - sinceClaimMs, reason: 'a call may be in flight' };
  }
  // No call can be in flight any more: a turn its dead worker never ended passes on.
  await leaveLine(deps.line, attempt.enterpriseNumber, id);
  const enterprise = await findEnterprise(deps.db, attempt.enterpriseNumber);
  const credentials = enterprise?.credentials;
  const log = { messageId: id, enterprise: attempt.enterpriseNumber };
  if (!credentials || !providerRef) {
    await recordUnknown(deps.db, id, { code: 'lookup_impossible', message: 'Outcome unknown and the message cannot be looked up (no WebSMS configuration)' });
    deps.logger.error({ ...log, outcome: 'unknown' }, 'sms outcome unknown; cannot look it up');
    deps.metrics?.sendOutcome(attempt.enterpriseNumber, 'unknown');
    return finishedFromRow(deps, id);
  }
  const lookup: LookupOutcome = await deps.websms.lookupByCustomId(credentials, providerRef);
  switch (lookup.kind) {
    case 'found':
      deps.logger.info({ ...log, outcome: 'success', deliveryStatus: lookup.statusName }, 'sms found at WebSMS after an unknown outcome');
      deps.metrics?.sendOutcome(attempt.enterpriseNumber, 'success');
      await recordAccepted(deps.db, id, { websmsMessageId: websmsIdOf(lookup.response), price: null, parts: null, amount: null, response: { lookup: lookup.response } });
      return finishedFromRow(deps, id);
    case 'not-found':
      deps.logger.warn({ ...log, outcome: 'resend' }, 'WebSMS has no record of the unknown attempt; resending (recorded as a possible duplicate)');
      return resendLater(deps, attempt, { id, enterpriseNumber: attempt.enterpriseNumber }, { code: 'not_sent', message: 'WebSMS has no record of the attempt whose outcome was unknown' }, log, true);
    case 'failed': {
      const failure = { code: 'lookup_failed', message: scrub(`Outcome unknown; lookup failed: ${lookup.reason}`, credentials) };
      if (attempt.lastAttempt) {
        // Never resend on our own: an operator decides (the row says why).
        await recordUnknown(deps.db, id, failure);
        deps.logger.error({ ...log, outcome: 'unknown' }, 'sms outcome unknown; lookups exhausted');
        deps.metrics?.sendOutcome(attempt.enterpriseNumber, 'unknown');
        return finishedFromRow(deps, id);
      }
      return { kind: 'retry', reason: failure.message };
    }
  }
}

function missingRow(deps: DeliveryDeps, id: number): DeliveryStep {
  deps.logger.error({ messageId: id }, 'queued message has no row; dropping its job');
  return { kind: 'finished', outcome: null };
}

async function finishedFromRow(deps: DeliveryDeps, id: number): Promise<DeliveryStep> {
  const record = await findMessage(deps.db, id);
  return { kind: 'finished', outcome: record ? recordOutcome(record) : null };
}

function websmsIdOf(response: Record<string, unknown>): number | null {
  const value = response.message_id;
  return typeof value === 'number' && Number.isSafeInteger(value) ? value : null;
}

/** Defence in depth: a provider text never carries the key into a row, a log or an answer. */
function scrub(text: string, credentials: WebsmsCredentials): string {
  if (!credentials.apiKey) return text;
  return text.split(credentials.apiKey).join('[redacted]').split(encodeURIComponent(credentials.apiKey)).join('[redacted]');
}
