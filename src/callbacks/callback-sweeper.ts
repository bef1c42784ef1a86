import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import { findOverdueHeads, findOverdueOwed, type OwedEvent } from './callback-repository.ts';
import { createPeriodicTask } from '../periodic-task.ts';

// Events are rows first: a head event overdue for longer than a grace period has lost its job (Redis
// was down when it was raised, lost its data, or the job failed for good while PostgreSQL was away),
// and gets it back. And a message's change is a row before its event is: a change still owed after the
// grace period (its worker died, or lost PostgreSQL, between the two) gets its event raised here.
// Idempotent (one job id per event, one event per change), so every worker process may run one.

export interface CallbackSweeperPorts {
  db: Db;
  logger: Logger;
  /** queues the event again unless its job is alive */
  requeue: (eventId: number, messageId: number) => Promise<'queued' | 'alive'>;
  /** raises an owed event (emit-message-event.ts raiseOwedEvent) */
  raiseOwed: (owed: OwedEvent) => Promise<'raised' | 'stale'>;
}

export interface CallbackSweeper {
  sweep(): Promise<number[]>;
  start(): void;
  stop(): Promise<void>;
}

export function createCallbackSweeper(ports: CallbackSweeperPorts, options: { intervalMs: number; graceMs: number; batchSize?: number }): CallbackSweeper {
  async function sweep(): Promise<number[]> {
    for (const owed of await findOverdueOwed(ports.db, options.graceMs, options.batchSize ?? 200)) {
      const result = await ports.raiseOwed(owed);
      ports.logger.warn({ messageId: owed.messageId, type: owed.type, result }, 'callback sweeper raised an event its message change was owed');
    }
    const heads = await findOverdueHeads(ports.db, options.graceMs, options.batchSize ?? 200);
    const queued: number[] = [];
    for (const head of heads) {
      if ((await ports.requeue(head.id, head.messageId)) === 'alive') continue;
      queued.push(head.id);
      ports.logger.warn({ messageId: head.messageId, eventId: head.id }, 'callback sweeper queued an event that had lost its job');
    }
    return queued;
  }

  const task = createPeriodicTask(sweep, { intervalMs: options.intervalMs, logger: ports.logger, failure: 'callback sweep failed; will try again' });

  return {
    sweep,
    start: task.start,
    stop: task.stop,
  };
}
