import { DelayedError, Worker, type ConnectionOptions, type Job } from 'bullmq';
import { deliverMessage, type DeliveryDeps } from '../src/messages/deliver.ts';
import type { DeliveryOutcome } from '../src/messages/message.ts';
import type { Acceptance } from '../src/messages/repository.ts';
import { SEND_QUEUE, type SendJobData } from '../src/queue/jobs.ts';
import { sendPhase } from '../src/metrics/send-phases.ts';

// The BullMQ side of delivery: maps each DeliveryStep onto what BullMQ does with the job next.
//   finished → the job completes, its return value is the outcome (no phone, text or key)
//   wait     → moveToDelayed + DelayedError: the worker slot is freed and no attempt is used
//   retry    → a thrown Error: BullMQ retries with exponential backoff until attempts run out

export interface SendJobState extends SendJobData {
  /** Set only when WebSMS accepted the message but PostgreSQL could not record it. */
  acceptance?: Acceptance;
}

export interface SendWorkerOptions {
  connection: ConnectionOptions;
  prefix: string;
  concurrency: number;
  autorun?: boolean;
}

export function createSendWorker(deps: DeliveryDeps, options: SendWorkerOptions): Worker<SendJobState, DeliveryOutcome | null> {
  const processor = async (job: Job<SendJobState, DeliveryOutcome | null>, token?: string) => {
    sendPhase({ phase: 'job-started', messageId: job.data.messageId });
    const step = await deliverMessage(deps, {
      messageId: job.data.messageId,
      enterpriseNumber: job.data.enterpriseNumber,
      lastAttempt: job.attemptsMade + 1 >= (job.opts.attempts ?? 1),
      firstRun: job.attemptsStarted <= 1,
      // A job added with a delay waited for its turn in its enterprise's line (counted once, at its first attempt).
      waitedInLineMs: job.attemptsMade === 0 && (job.opts.delay ?? 0) > 0 ? Date.now() - job.timestamp : 0,
      stashedAcceptance: job.data.acceptance,
      stashAcceptance: (acceptance) => job.updateData({ ...job.data, acceptance }),
    });
    switch (step.kind) {
      case 'finished':
        return step.outcome;
      case 'wait':
        await job.moveToDelayed(Date.now() + step.delayMs, token);
        throw new DelayedError(step.reason);
      case 'retry':
        throw new Error(step.reason);
    }
  };
  const worker = new Worker<SendJobState, DeliveryOutcome | null>(SEND_QUEUE, processor, {
    connection: options.connection,
    prefix: options.prefix,
    concurrency: options.concurrency,
    autorun: options.autorun ?? true,
    // A killed worker's job comes back after the lock expires and meets the claim check; several
    // stalls in a row (crash loops) must still not fail a message that was never sent.
    maxStalledCount: 10,
  });
  worker.on('completed', (job) => sendPhase({ phase: 'job-completed', messageId: job.data.messageId }));
  return worker;
}
