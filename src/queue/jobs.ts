import type { JobsOptions } from 'bullmq';

// The job catalogue. A job is a pointer to a row: the message id and the enterprise number (so
// the dashboard and `jobs list` can group by tenant). Never a phone, a text or a key: BullMQ keeps
// job data in clear text in Redis and the dashboard shows it.

export const SEND_QUEUE = 'user-sms-send';
export const SEND_JOB = 'send';

export interface SendJobData {
  messageId: number;
  enterpriseNumber: string;
}

/**
 * Job id = message id, so enqueueing the same message twice is harmless. BullMQ refuses
 * integer-looking custom ids, hence the letter.
 */
export function jobIdFor(messageId: number): string {
  return `m${messageId}`;
}

export interface JobPolicy {
  sendAttempts: number;
  retryBackoffMs: number;
  keepFinishedJobsS: number;
}

export function sendJobOptions(messageId: number, policy: JobPolicy): JobsOptions {
  return {
    jobId: jobIdFor(messageId),
    attempts: policy.sendAttempts,
    backoff: { type: 'exponential', delay: policy.retryBackoffMs },
    // Kept for a while (never removed at once) so late waiters and the dashboard can read them.
    removeOnComplete: { age: policy.keepFinishedJobsS, count: 100_000 },
    // Failed jobs stay a week for retry inspection.
    removeOnFail: { age: 7 * 86_400 },
  };
}
