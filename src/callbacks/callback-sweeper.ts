import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import { findOverdueOwed, type OwedEvent } from './callback-repository.ts';
import { createPeriodicTask } from '../periodic-task.ts';

// A message's change is a row before its event is: a change still owed after a grace period (its
// worker died, or lost PostgreSQL, between the two) gets its event raised here. Idempotent (one event
// per change), so every worker process may run one. Raised events need no sweeping: they are due rows
// that the dispatchers claim (callback-dispatcher.ts), whatever happened to the process that raised them.

export interface CallbackSweeperPorts {
  db: Db;
  logger: Logger;
  /** raises an owed event (emit-message-event.ts raiseOwedEvent) */
  raiseOwed: (owed: OwedEvent) => Promise<'raised' | 'stale'>;
}

export interface CallbackSweeper {
  sweep(): Promise<number>;
  start(): void;
  stop(): Promise<void>;
}

export function createCallbackSweeper(ports: CallbackSweeperPorts, options: { intervalMs: number; graceMs: number; batchSize?: number }): CallbackSweeper {
  async function sweep(): Promise<number> {
    let raised = 0;
    for (const owed of await findOverdueOwed(ports.db, options.graceMs, options.batchSize ?? 200)) {
      const result = await ports.raiseOwed(owed);
      if (result === 'raised') raised += 1;
      ports.logger.warn({ messageId: owed.messageId, type: owed.type, result }, 'callback sweeper raised an event its message change was owed');
    }
    return raised;
  }

  const task = createPeriodicTask(sweep, { intervalMs: options.intervalMs, logger: ports.logger, failure: 'callback sweep failed; will try again' });

  return {
    sweep,
    start: task.start,
    stop: task.stop,
  };
}
