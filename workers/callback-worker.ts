import { DelayedError, Worker, type ConnectionOptions, type Job } from 'bullmq';
import { deliverCallbackEvent, type CallbackDeliveryDeps } from '../src/callbacks/deliver-callback.ts';
import { CALLBACK_QUEUE, type CallbackJobData } from '../src/callbacks/callback-jobs.ts';

// The BullMQ side of callback delivery: maps each CallbackStep onto what BullMQ does with the job next.
//   finished → the job completes (and is removed: the event row keeps the history)
//   wait     → moveToDelayed + DelayedError: the slot is freed, no BullMQ attempt is used
// An error thrown (PostgreSQL down) is retried by BullMQ's own attempts; an event whose job fails for
// good is queued again by the callback sweeper.

export interface CallbackWorkerOptions {
  connection: ConnectionOptions;
  prefix: string;
  concurrency: number;
}

export function createCallbackWorker(deps: CallbackDeliveryDeps, options: CallbackWorkerOptions): Worker<CallbackJobData, string> {
  const processor = async (job: Job<CallbackJobData, string>, token?: string) => {
    const step = await deliverCallbackEvent(deps, job.data.eventId);
    if (step.kind === 'finished') return step.result;
    await job.moveToDelayed(Date.now() + step.delayMs, token);
    throw new DelayedError(step.reason);
  };
  return new Worker<CallbackJobData, string>(CALLBACK_QUEUE, processor, {
    connection: options.connection,
    prefix: options.prefix,
    concurrency: options.concurrency,
    // A killed worker's job comes back once its lock expires and is attempted again, with the same
    // webhook-id (at least once).
    maxStalledCount: 10,
  });
}
