import type { JobsOptions, Queue } from 'bullmq';

// The callback queue: its own queue and workers, so a slow or dead receiver never takes a send's
// worker slot. A job is a pointer to an event row (ids only: the URL may carry a receiver's token and
// stays in PostgreSQL). Retries of an attempt are the event's own schedule (deliver-callback.ts), not
// BullMQ's; BullMQ's attempts only cover a processor that could not run (PostgreSQL down).

export const CALLBACK_QUEUE = 'user-sms-callbacks';
export const CALLBACK_JOB = 'callback';

export interface CallbackJobData {
  eventId: number;
  messageId: number;
}

/** One job per event; BullMQ refuses integer-looking custom ids, hence the letters. */
export function callbackJobId(eventId: number): string {
  return `cb${eventId}`;
}

export function callbackJobOptions(eventId: number): JobsOptions {
  return {
    jobId: callbackJobId(eventId),
    attempts: 20,
    backoff: { type: 'exponential', delay: 1_000 },
    // Gone once done, so that an event queued again (the next of its message, an operator's retry)
    // gets a new job instead of meeting the old id. The event row keeps the history.
    removeOnComplete: true,
    removeOnFail: { age: 7 * 86_400 },
  };
}

/** Queues an event's delivery; a job that already exists for it (waiting, delayed, running) is left as it is. */
export async function queueCallbackDelivery(queue: Queue<CallbackJobData>, eventId: number, messageId: number): Promise<void> {
  await queue.add(CALLBACK_JOB, { eventId, messageId }, callbackJobOptions(eventId));
}

/** queueCallbackDelivery for several events in one round trip. */
export async function queueCallbackDeliveries(queue: Queue<CallbackJobData>, events: ReadonlyArray<{ eventId: number; messageId: number }>): Promise<void> {
  if (events.length === 0) return;
  await queue.addBulk(events.map(({ eventId, messageId }) => ({ name: CALLBACK_JOB, data: { eventId, messageId }, opts: callbackJobOptions(eventId) })));
}

/**
 * Queues an event's delivery again after its job was lost or failed for good (the sweeper, an operator's
 * retry): a finished job of the same id is removed first, a live one left alone.
 */
export async function requeueCallbackDelivery(queue: Queue<CallbackJobData>, eventId: number, messageId: number): Promise<'queued' | 'alive'> {
  const jobId = callbackJobId(eventId);
  const state = await queue.getJobState(jobId);
  if (state === 'active' || state === 'waiting' || state === 'delayed' || state === 'prioritized' || state === 'waiting-children') return 'alive';
  if (state !== 'unknown') await queue.remove(jobId);
  await queueCallbackDelivery(queue, eventId, messageId);
  return 'queued';
}
