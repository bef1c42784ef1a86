import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import { findOverdueHeads } from './callback-repository.ts';

// Events are rows first: a head event overdue for longer than a grace period has lost its job (Redis
// was down when it was raised, lost its data, or the job failed for good while PostgreSQL was away),
// and gets it back. Idempotent (one job id per event), so every worker process may run one.

export interface CallbackSweeperPorts {
  db: Db;
  logger: Logger;
  /** queues the event again unless its job is alive */
  requeue: (eventId: number, messageId: number) => Promise<'queued' | 'alive'>;
}

export interface CallbackSweeper {
  sweep(): Promise<number[]>;
  start(): void;
  stop(): Promise<void>;
}

export function createCallbackSweeper(ports: CallbackSweeperPorts, options: { intervalMs: number; graceMs: number; batchSize?: number }): CallbackSweeper {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> = Promise.resolve();

  async function sweep(): Promise<number[]> {
    const heads = await findOverdueHeads(ports.db, options.graceMs, options.batchSize ?? 200);
    const queued: number[] = [];
    for (const head of heads) {
      if ((await ports.requeue(head.id, head.messageId)) === 'alive') continue;
      queued.push(head.id);
      ports.logger.warn({ messageId: head.messageId, eventId: head.id }, 'callback sweeper queued an event that had lost its job');
    }
    return queued;
  }

  const tick = () => {
    running = sweep()
      .catch((error: unknown) => ports.logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'callback sweep failed; will try again'))
      .finally(() => {
        if (timer) timer = setTimeout(tick, options.intervalMs).unref();
      });
  };

  return {
    sweep,
    start() {
      timer = setTimeout(tick, Math.min(options.intervalMs, 1_000)).unref();
    },
    async stop() {
      clearTimeout(timer);
      timer = undefined;
      await running;
    },
  };
}
