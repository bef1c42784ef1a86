import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import { findOwed, type OwedChange } from './callback-repository.ts';
import { createPeriodicTask } from '../periodic-task.ts';

// How a message's change becomes its caller's event. The statement that changes the message (a send's
// outcome, a delivery status, a cancel, an operator's drop) leaves the event owed in its own
// transaction (callback_owed, written by a trigger), and this raiser, part of the background work,
// turns what is owed into events in batches: one read and one insert for as many changes as it finds,
// off the send's path and at the background's CPU priority. Nothing is lost when a process dies
// between a change and its event: the marker is the change's own row. Idempotent (one event per
// change), so any number of processes may run one.

export interface OwedEventRaiserPorts {
  db: Db;
  logger: Logger;
  /** raises a batch of owed events (emit-message-event.ts raiseOwedEvents) */
  raise: (owed: readonly OwedChange[]) => Promise<{ raised: number; stale: number }>;
}

export interface OwedEventRaiser {
  /** Raises what is owed now; how many events it raised. */
  raiseOwed(): Promise<number>;
  start(): void;
  stop(): Promise<void>;
}

/** Changes raised per statement. */
const BATCH_SIZE = 500;
/** Batches per round at most: a round ends, whatever is left, and the next one goes on. */
const MAX_BATCHES = 20;

export function createOwedEventRaiser(ports: OwedEventRaiserPorts, options: { intervalMs: number; batchSize?: number }): OwedEventRaiser {
  const batchSize = options.batchSize ?? BATCH_SIZE;

  async function raiseOwed(): Promise<number> {
    let raised = 0;
    for (let batch = 0; batch < MAX_BATCHES; batch++) {
      const owed = await findOwed(ports.db, batchSize);
      if (owed.length === 0) break;
      const result = await ports.raise(owed);
      raised += result.raised;
      ports.logger.debug({ owed: owed.length, ...result }, 'owed callback events raised');
      if (owed.length < batchSize) break;
    }
    return raised;
  }

  const task = createPeriodicTask(raiseOwed, { intervalMs: options.intervalMs, logger: ports.logger, failure: 'owed callback events not raised; will try again' });

  return {
    raiseOwed,
    start: task.start,
    stop: task.stop,
  };
}
