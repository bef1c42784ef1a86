import type { Logger } from './logger.ts';

// A background task a worker process runs every `intervalMs` (the sweepers, the delivery poller):
// one round at a time — the next is scheduled when the last has finished, so a slow round never
// overlaps itself — and a failed round is logged and tried again next time, never thrown.

export interface PeriodicTask {
  start: () => void;
  /** No new round starts; resolves once the one in progress, if any, has finished. */
  stop: () => Promise<void>;
}

export function createPeriodicTask(round: () => Promise<unknown>, options: { intervalMs: number; logger: Logger; failure: string }): PeriodicTask {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> = Promise.resolve();

  const tick = () => {
    running = round()
      .catch((error: unknown) => options.logger.warn({ err: error instanceof Error ? error.message : String(error) }, options.failure))
      .finally(() => {
        if (timer) timer = setTimeout(tick, options.intervalMs).unref();
      });
  };

  return {
    start: () => {
      // The first round soon after start-up, whatever the interval: a restart catches up at once.
      timer = setTimeout(tick, Math.min(options.intervalMs, 1_000)).unref();
    },
    stop: async () => {
      clearTimeout(timer);
      timer = undefined;
      await running;
    },
  };
}
