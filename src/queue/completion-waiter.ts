import { QueueEvents, type ConnectionOptions } from 'bullmq';
import type { DeliveryOutcome } from '../messages/message.ts';
import { SEND_QUEUE } from './jobs.ts';

/** How a wait ended: the job finished (with its outcome), or the deadline came first. */
export type JobFinish = { kind: 'completed'; outcome: DeliveryOutcome | null } | { kind: 'failed' } | { kind: 'deadline' };

export interface WaitHandle {
  finished: Promise<JobFinish>;
  cancel(): void;
}

export interface CompletionWaiter {
  /** Register before the job is added, so that even an instant completion is seen. */
  wait(jobId: string, deadlineMs: number): WaitHandle;
  ready(): Promise<void>;
  close(): Promise<void>;
  /** Answers every pending wait at once with `deadline` (used when draining on shutdown). */
  releaseAll(): void;
}

/**
 * One QueueEvents stream reader per process, shared by all waiting requests (one per request would
 * open a blocking Redis connection each). Events name the job; waiters are found in a map.
 */
export function createCompletionWaiter(connection: ConnectionOptions, prefix: string): CompletionWaiter {
  const events = new QueueEvents(SEND_QUEUE, { connection, prefix });
  const waiters = new Map<string, Set<(finish: JobFinish) => void>>();

  const settle = (jobId: string, finish: JobFinish) => {
    const set = waiters.get(jobId);
    if (!set) return;
    waiters.delete(jobId);
    for (const resolve of set) resolve(finish);
  };

  events.on('completed', ({ jobId, returnvalue }) => {
    settle(jobId, { kind: 'completed', outcome: parseOutcome(returnvalue) });
  });
  events.on('failed', ({ jobId }) => settle(jobId, { kind: 'failed' }));
  // A lost stream connection is retried by BullMQ; waits still end at their deadline.
  events.on('error', () => undefined);

  return {
    wait(jobId, deadlineMs) {
      let resolveWait!: (finish: JobFinish) => void;
      const finished = new Promise<JobFinish>((resolve) => (resolveWait = resolve));
      const timer = setTimeout(() => done({ kind: 'deadline' }), deadlineMs);
      const done = (finish: JobFinish) => {
        clearTimeout(timer);
        const set = waiters.get(jobId);
        set?.delete(done);
        if (set?.size === 0) waiters.delete(jobId);
        resolveWait(finish);
      };
      const set = waiters.get(jobId) ?? new Set();
      set.add(done);
      waiters.set(jobId, set);
      return { finished, cancel: () => done({ kind: 'deadline' }) };
    },
    ready: () => events.waitUntilReady().then(() => undefined),
    releaseAll() {
      for (const jobId of [...waiters.keys()]) settle(jobId, { kind: 'deadline' });
    },
    async close() {
      this.releaseAll();
      await events.close();
    },
  };
}

function parseOutcome(returnvalue: unknown): DeliveryOutcome | null {
  const value: unknown = typeof returnvalue === 'string' ? safeJson(returnvalue) : returnvalue;
  if (value && typeof value === 'object' && 'status' in value) return value as DeliveryOutcome;
  return null;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}
