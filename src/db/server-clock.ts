import { performance } from 'node:perf_hooks';

/**
 * PostgreSQL's clock as one statement read it, carried forward on this process's monotonic clock: a
 * deadline for a later statement in PostgreSQL's own time, whatever the two machines' clocks say.
 * It runs at most a little behind PostgreSQL's (by the time the read's answer took to come back),
 * so a deadline taken from it is never later than meant.
 */
export interface ServerClock {
  /** PostgreSQL's time `ms` from now */
  after(ms: number): Date;
}

export function serverClockFrom(serverTime: Date): ServerClock {
  const readAt = performance.now();
  return { after: (ms) => new Date(serverTime.getTime() + (performance.now() - readAt) + ms) };
}
