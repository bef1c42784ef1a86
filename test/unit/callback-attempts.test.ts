import { describe, expect, it } from 'vitest';
import { attemptRecord } from '../../src/callbacks/callback-dispatcher.ts';
import type { CallbackEvent } from '../../src/callbacks/callback-repository.ts';

// What one attempt makes of its event: delivered, retried after a doubling wait, or given up at the
// end of its retry window (the last attempt is made at the window's end, not skipped).

const WINDOW_START = Date.parse('2026-12-02T10:00:00Z');
const OPTIONS = { retryBackoffMs: 10_000, retryForS: 3_600 };

function claimed(attempts: number): CallbackEvent {
  const at = new Date(WINDOW_START);
  return {
    id: 7, messageId: 3, type: 'message.sent', webhookId: 'msg_x', url: 'http://crm.test/x', body: '{}', status: 'pending', attempts,
    createdAt: at, windowStartAt: at, nextAttemptAt: at, lastAttemptAt: null, lastError: null, lastHttpStatus: null, finishedAt: null,
  };
}

const failed = { ok: false as const, httpStatus: 503, reason: 'HTTP 503' };

describe('a callback attempt', () => {
  it('finishes its event when the receiver answers 2xx', () => {
    expect(attemptRecord(claimed(2), { ok: true, httpStatus: 204 }, OPTIONS, WINDOW_START + 5_000)).toEqual({ eventId: 7, outcome: 'delivered', httpStatus: 204, error: null, nextAttemptAt: null });
  });

  it('is retried after the backoff, doubling with each failure', () => {
    const now = WINDOW_START + 1_000;
    expect(attemptRecord(claimed(0), failed, OPTIONS, now)).toEqual({ eventId: 7, outcome: 'retry', httpStatus: 503, error: 'HTTP 503', nextAttemptAt: new Date(now + 10_000) });
    expect(attemptRecord(claimed(3), failed, OPTIONS, now).nextAttemptAt).toEqual(new Date(now + 80_000));
  });

  it('makes its last attempt at the end of the retry window, and a failure then gives the event up', () => {
    const nearEnd = WINDOW_START + 3_595_000;
    expect(attemptRecord(claimed(9), failed, OPTIONS, nearEnd)).toMatchObject({ outcome: 'retry', nextAttemptAt: new Date(WINDOW_START + 3_600_000) });
    expect(attemptRecord(claimed(10), failed, OPTIONS, WINDOW_START + 3_600_000)).toEqual({ eventId: 7, outcome: 'given_up', httpStatus: 503, error: 'HTTP 503', nextAttemptAt: null });
  });
});
