import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import { findStaleUnfinished, touch } from './repository.ts';
import { createPeriodicTask } from '../periodic-task.ts';

// The row is the truth, the job only a pointer: a row left unfinished without a job (the API died
// between insert and enqueue, Redis was down or lost its data) gets its job back, and one whose job
// failed for good while the row could not be finished (PostgreSQL down longer than the whole retry
// budget) gets that job retried. Both are idempotent (job id = message id), so a sweeper running in
// every worker process is harmless; a row meets the claim check whatever happens twice.

export interface SweeperPorts {
  db: Db;
  logger: Logger;
  /** the queue's job for this message: none, failed for good, or anything else (alive) */
  jobState: (messageId: number) => Promise<'missing' | 'failed' | 'alive'>;
  enqueue: (messageId: number, enterpriseNumber: string) => Promise<void>;
  retryFailed: (messageId: number) => Promise<void>;
}

export interface SweeperOptions {
  intervalMs: number;
  /** rows untouched this long are checked */
  idleMs: number;
  batchSize?: number;
}

export interface Sweeper {
  /** One pass; returns the ids given a new job. */
  sweep(): Promise<number[]>;
  start(): void;
  stop(): Promise<void>;
}

export function createSweeper(ports: SweeperPorts, options: SweeperOptions): Sweeper {
  async function sweep(): Promise<number[]> {
    const stale = await findStaleUnfinished(ports.db, options.idleMs, options.batchSize ?? 500);
    const requeued: number[] = [];
    for (const message of stale) {
      const state = await ports.jobState(message.id);
      if (state === 'alive') continue;
      if (state === 'missing') await ports.enqueue(message.id, message.enterpriseNumber);
      else await ports.retryFailed(message.id);
      await touch(ports.db, message.id);
      requeued.push(message.id);
      const what = state === 'missing' ? 're-enqueued a message without a job' : 'retried the failed job of an unfinished message';
      ports.logger.warn({ messageId: message.id, enterprise: message.enterpriseNumber, status: message.status }, `sweeper ${what}`);
    }
    return requeued;
  }

  const task = createPeriodicTask(sweep, { intervalMs: options.intervalMs, logger: ports.logger, failure: 'sweep failed; will try again' });

  return {
    sweep,
    start: task.start,
    stop: task.stop,
  };
}
