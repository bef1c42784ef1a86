import { setTimeout as sleep } from 'node:timers/promises';
import type { Queue } from 'bullmq';
import { jobIdFor } from './jobs.ts';

// Waking a message's delayed job at its slot (src/line): one call to BullMQ's own script, so the job
// runs once, at the right time, instead of polling.

/** A job found running may be a moment away from parking itself in the delayed set: look again a few times. */
const ACTIVE_RECHECKS = 3;
const ACTIVE_RECHECK_MS = 30;
/**
 * Workers notice a delayed job becoming due through a blocking Redis call whose timeout Redis serves on
 * its own tick (10 Hz by default): measured 20–100 ms late under load, which would add up along a line.
 * So the waker also promotes the job itself at the slot, a few ms after it so as never to be early on
 * Redis's clock. The delayed set stays the durable copy: should this process die first, it still fires.
 */
const PRECISE_WAKE_AFTER_MS = 3;

export async function wakeJob(queue: Queue, messageId: number, inMs: number): Promise<'woken' | 'not-waiting' | 'missing'> {
  const jobId = jobIdFor(messageId);
  const startedMs = Date.now();
  for (let check = 0; ; check += 1) {
    const delayMs = Math.round(inMs - (Date.now() - startedMs));
    try {
      if (delayMs <= 0) {
        await queue.backend.promote(jobId);
      } else {
        await queue.backend.changeDelay(jobId, delayMs);
        setTimeout(() => {
          // Already moved by BullMQ's own timer (or taken away): nothing to do.
          queue.backend.promote(jobId).catch(() => undefined);
        }, delayMs + PRECISE_WAKE_AFTER_MS).unref();
      }
      return 'woken';
    } catch (error) {
      const state = await queue.getJobState(jobId);
      if (state === 'delayed') throw error;
      if (state === 'unknown') return 'missing';
      if (state !== 'active' || check >= ACTIVE_RECHECKS) return 'not-waiting';
      await sleep(ACTIVE_RECHECK_MS);
    }
  }
}
