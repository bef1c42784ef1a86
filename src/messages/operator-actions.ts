import type { MessageStatus } from './message.ts';

// What an operator's `retry` or `drop` of one message does, decided from the row's status and its
// queue job's state. Pure: src/queue/inspection.ts carries the plan out.
//
// The state machine only moves forward on its own (design.md, decision 2). An operator may reopen a
// finished message, but only along paths that keep the no-duplicate rule:
// - `failed` was certainly never accepted by WebSMS (explicit refusal, or attempts spent on failures
//   that never reached it): back to `queued`, a plain resend is safe.
// - `unknown` and `sending` may already have been sent and charged: back to `sending`, so the next
//   run takes the reconcile path — look the message up by our reference, resend only if WebSMS
//   never received it (and record that it was resent) — never a blind resend.
// - `success` is never retried: it would be sent twice.
// Dropping ends a message: `pending`/`queued` certainly were not sent → `failed`; `sending` may have
// been sent → `unknown` (claiming `failed` could hide a charged SMS, claiming `success` could hide a
// lost one), and only once no call can still be in flight.

/** A queue job's state as the inspection sees it; `missing`: Redis has no job for the message. */
export type JobStateName = 'waiting' | 'active' | 'delayed' | 'failed' | 'completed' | 'missing';

/** What to do with the job after the row has been changed. */
export type JobStep =
  /** a failed or completed job goes back to waiting with a fresh attempt budget */
  | 'retry-finished'
  /** a delayed job runs now (the rate limit still applies) */
  | 'promote'
  /** no job any more (finished jobs expire): add a new one */
  | 'enqueue'
  | 'remove'
  | 'none';

export type OperatorPlan =
  | { kind: 'act'; rowTo: MessageStatus; jobStep: JobStep; explanation: string }
  /** nothing to do, and nothing wrong: exit 0, nothing recorded */
  | { kind: 'nothing'; explanation: string }
  | { kind: 'refuse'; reason: string };

export interface RowFacts {
  status: MessageStatus;
  /** send attempts recorded on the row; 0 = never reached the send path */
  attempts: number;
}

const ACTIVE_REFUSAL = 'its job is being processed by a worker right now; look again in a few seconds';

function jobStepForRetry(job: JobStateName): JobStep | 'nothing' {
  switch (job) {
    case 'failed':
    case 'completed':
      return 'retry-finished';
    case 'delayed':
      return 'promote';
    case 'missing':
      return 'enqueue';
    case 'waiting':
      return 'nothing';
    case 'active':
      throw new Error('unreachable: active jobs are refused first');
  }
}

export function planRetry(row: RowFacts, job: JobStateName): OperatorPlan {
  if (job === 'active') return { kind: 'refuse', reason: ACTIVE_REFUSAL };
  if (row.status === 'success') return { kind: 'refuse', reason: 'it was sent (status success); a retry would send it twice' };
  if (row.status === 'failed' && row.attempts === 0) {
    // Refused at acceptance (unknown enterprise) or closed because the queue was down: the caller
    // was told it was not accepted and may well have sent it again.
    return { kind: 'refuse', reason: 'it was refused before it was ever queued (the caller was told so); nothing to retry' };
  }
  const step = jobStepForRetry(job);
  switch (row.status) {
    case 'failed':
      return {
        kind: 'act',
        rowTo: 'queued',
        jobStep: step === 'nothing' ? 'none' : step,
        explanation: 'WebSMS never accepted it, so it is queued to be sent again',
      };
    case 'unknown':
      return {
        kind: 'act',
        rowTo: 'sending',
        jobStep: step === 'nothing' ? 'none' : step,
        explanation: 'it may have been sent: a worker first looks it up at WebSMS by its reference and resends only if WebSMS never received it',
      };
    case 'sending':
    case 'pending':
    case 'queued':
      if (step === 'nothing') return { kind: 'nothing', explanation: `it is already waiting for a worker (status ${row.status})` };
      return {
        kind: 'act',
        rowTo: row.status,
        jobStep: step,
        explanation:
          row.status === 'sending'
            ? 'its last call may have reached WebSMS: a worker looks it up before any resend'
            : step === 'promote'
              ? 'its delayed job runs now (the enterprise rate limit still applies)'
              : 'its job runs again',
      };
  }
}

/**
 * A cancel (DELETE /messages/{id}, and an operator's drop of a message not yet sent): possible until a
 * worker claims the message. A job that is active but has not claimed the row yet (it would be
 * `sending`) is no obstacle: the row's conditional update decides, and a worker that loses finds the
 * message closed and sends nothing.
 */
export function planCancel(row: RowFacts, job: JobStateName): OperatorPlan {
  switch (row.status) {
    case 'pending':
    case 'queued':
      return {
        kind: 'act',
        rowTo: 'failed',
        jobStep: job === 'missing' || job === 'active' ? 'none' : 'remove',
        explanation: 'it was not sent yet, so it is cancelled',
      };
    case 'sending':
      return { kind: 'refuse', reason: 'it is being sent; too late to cancel' };
    case 'success':
    case 'failed':
    case 'unknown':
      return { kind: 'refuse', reason: `it is already finished (status ${row.status}); nothing to cancel` };
  }
}

export function planDrop(row: RowFacts, job: JobStateName): OperatorPlan {
  if (row.status === 'pending' || row.status === 'queued') return planCancel(row, job);
  if (job === 'active') return { kind: 'refuse', reason: ACTIVE_REFUSAL };
  const jobStep: JobStep = job === 'missing' ? 'none' : 'remove';
  switch (row.status) {
    case 'sending':
      return {
        kind: 'act',
        rowTo: 'unknown',
        jobStep,
        explanation: 'its last call may have reached WebSMS, so it is closed as unknown (it may have been sent), not failed',
      };
    case 'success':
    case 'failed':
    case 'unknown':
      if (job === 'missing') return { kind: 'refuse', reason: `it is already finished (status ${row.status}) and has no queue job; nothing to drop` };
      return { kind: 'act', rowTo: row.status, jobStep, explanation: `it is already finished (status ${row.status}); only its queue job is removed` };
  }
}
