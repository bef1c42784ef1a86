import { describe, expect, it } from 'vitest';
import { planCancel, planDrop, planRetry, type JobStateName } from '../../src/messages/operator-actions.ts';
import type { MessageStatus } from '../../src/messages/message.ts';

const ALL_JOB_STATES: JobStateName[] = ['waiting', 'active', 'delayed', 'failed', 'completed', 'missing'];
const ALL_STATUSES: MessageStatus[] = ['pending', 'queued', 'sending', 'success', 'failed', 'unknown'];

describe('an operator retry never sends a message twice', () => {
  it('never retries a message that was sent', () => {
    for (const job of ALL_JOB_STATES) expect(planRetry({ status: 'success', attempts: 1 }, job).kind).toBe('refuse');
  });

  it('never touches a message whose job a worker holds right now, except to cancel one it has not claimed', () => {
    for (const status of ALL_STATUSES) {
      expect(planRetry({ status, attempts: 1 }, 'active').kind).toBe('refuse');
      // pending/queued: the worker has not claimed the row; the conditional update decides who wins.
      const unclaimed = status === 'pending' || status === 'queued';
      expect(planDrop({ status, attempts: 1 }, 'active')).toMatchObject(unclaimed ? { kind: 'act', rowTo: 'failed', jobStep: 'none' } : { kind: 'refuse' });
      expect(planCancel({ status, attempts: 1 }, 'active')).toMatchObject(unclaimed ? { kind: 'act', rowTo: 'failed', jobStep: 'none' } : { kind: 'refuse' });
    }
  });

  it('cancels only what no worker has claimed: pending and queued; sending and finished messages are refused', () => {
    for (const job of ['waiting', 'delayed', 'missing', 'failed', 'completed'] as const) {
      expect(planCancel({ status: 'queued', attempts: 0 }, job)).toMatchObject({ kind: 'act', rowTo: 'failed', jobStep: job === 'missing' ? 'none' : 'remove' });
      expect(planCancel({ status: 'pending', attempts: 0 }, job)).toMatchObject({ kind: 'act', rowTo: 'failed' });
      for (const status of ['sending', 'success', 'failed', 'unknown'] as const) expect(planCancel({ status, attempts: 1 }, job).kind).toBe('refuse');
    }
  });

  it('sends an unknown outcome through the reconcile path (back to sending), never straight to a resend', () => {
    for (const job of ['failed', 'completed', 'missing', 'delayed', 'waiting'] as const) {
      const plan = planRetry({ status: 'unknown', attempts: 2 }, job);
      expect(plan).toMatchObject({ kind: 'act', rowTo: 'sending' });
    }
  });

  it('requeues a failed message, which WebSMS never accepted, with a fresh job or a retried one', () => {
    expect(planRetry({ status: 'failed', attempts: 1 }, 'completed')).toMatchObject({ kind: 'act', rowTo: 'queued', jobStep: 'retry-finished' });
    expect(planRetry({ status: 'failed', attempts: 1 }, 'failed')).toMatchObject({ kind: 'act', rowTo: 'queued', jobStep: 'retry-finished' });
    expect(planRetry({ status: 'failed', attempts: 1 }, 'missing')).toMatchObject({ kind: 'act', rowTo: 'queued', jobStep: 'enqueue' });
  });

  it('refuses a message refused at acceptance: the caller was told it was not taken', () => {
    expect(planRetry({ status: 'failed', attempts: 0 }, 'missing').kind).toBe('refuse');
  });

  it('runs a delayed job now and leaves a waiting one alone', () => {
    expect(planRetry({ status: 'queued', attempts: 0 }, 'delayed')).toMatchObject({ kind: 'act', rowTo: 'queued', jobStep: 'promote' });
    expect(planRetry({ status: 'queued', attempts: 0 }, 'waiting').kind).toBe('nothing');
    expect(planRetry({ status: 'sending', attempts: 1 }, 'failed')).toMatchObject({ kind: 'act', rowTo: 'sending', jobStep: 'retry-finished' });
  });
});

describe('an operator drop closes a message honestly', () => {
  it('closes a message not yet sent as failed and removes its job', () => {
    expect(planDrop({ status: 'queued', attempts: 0 }, 'delayed')).toMatchObject({ kind: 'act', rowTo: 'failed', jobStep: 'remove' });
    expect(planDrop({ status: 'pending', attempts: 0 }, 'missing')).toMatchObject({ kind: 'act', rowTo: 'failed', jobStep: 'none' });
  });

  it('closes a message whose last call may have reached WebSMS as unknown, not failed', () => {
    expect(planDrop({ status: 'sending', attempts: 1 }, 'delayed')).toMatchObject({ kind: 'act', rowTo: 'unknown' });
  });

  it('keeps a finished message as it is and only removes its job; without a job there is nothing to drop', () => {
    for (const status of ['success', 'failed', 'unknown'] as const) {
      expect(planDrop({ status, attempts: 1 }, 'completed')).toMatchObject({ kind: 'act', rowTo: status, jobStep: 'remove' });
      expect(planDrop({ status, attempts: 1 }, 'missing').kind).toBe('refuse');
    }
  });
});
