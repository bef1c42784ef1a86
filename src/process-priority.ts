import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import type { Logger } from './logger.ts';

// Giving way on CPU, for the background process (roles.ts startBackground). Linux needs two things
// for a nice value to count:
// - Every thread's own value: Linux keeps one per thread, and threads started later inherit it from
//   the one that starts them, so the threads already running are each lowered.
// - The session's scheduling group. Where autogroup scheduling is on (the default of many kernels),
//   CPU is shared between sessions first, and a nice value only counts against the processes of its
//   own session. A process started in a session of its own (a systemd unit, a container, `setsid`)
//   would then compete with the API, the workers and PostgreSQL at full weight, whatever its threads'
//   nice. Its session's group is given the same nice value, which any process may do to its own
//   group. A process that shares its session (forked by `npm start`, started from a shell) leaves the
//   group alone: lowering it would lower the API and the workers, or the operator's shell, as well;
//   there its threads' nice counts against them already.

/** What lowerPriority did to the session's scheduling group. */
export type SessionGroupOutcome =
  /** this process leads its session: the group, its own, has the nice value now */
  | 'lowered'
  /** the session is shared with processes that must not give way: left as it is */
  | 'shared'
  /** no such group here (not Linux, a kernel without autogroup) or it could not be written */
  | 'unavailable';

const AUTOGROUP = '/proc/self/autogroup';

/** The session id of this process (field 6 of /proc/self/stat), or undefined where there is no /proc. */
function sessionId(): number | undefined {
  try {
    const stat = readFileSync('/proc/self/stat', 'utf8');
    // Fields after the command name, which is in parentheses and may hold spaces: state, ppid, pgrp, session.
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
  } catch {
    return undefined;
  }
}

/** Raises the nice value of every thread of this process to at least `nice`; how many threads failed. */
function lowerThreads(nice: number): { threads: number; failed: number } {
  let threads: number[];
  try {
    threads = readdirSync('/proc/self/task').map(Number);
  } catch {
    threads = [0]; // no /proc (not Linux): where threads share the process's value, the process itself
  }
  let failed = 0;
  for (const thread of threads) {
    try {
      setPriority(thread, Math.max(nice, getPriority(thread)));
    } catch {
      failed += 1;
    }
  }
  return { threads: threads.length, failed };
}

/** Gives this process's session group the nice value when the session is this process's own. */
function lowerSessionGroup(nice: number): SessionGroupOutcome {
  if (sessionId() !== process.pid) return 'shared';
  try {
    // "/autogroup-42 nice 0": never raised back, should something have lowered it further.
    const current = Number(/nice (-?\d+)/.exec(readFileSync(AUTOGROUP, 'utf8'))?.[1] ?? Number.NaN);
    if (!(current >= nice)) writeFileSync(AUTOGROUP, String(nice));
    return 'lowered';
  } catch {
    return 'unavailable';
  }
}

/** Lowers this process's CPU priority to `nice` (1–19) wherever Linux lets that count; logs what it did. */
export function lowerPriority(nice: number, logger: Logger): { sessionGroup: SessionGroupOutcome } {
  const { threads, failed } = lowerThreads(nice);
  const sessionGroup = lowerSessionGroup(nice);
  if (failed > 0) logger.warn({ nice, threads, failed, sessionGroup }, 'could not lower the priority of every thread');
  else logger.info({ nice, sessionGroup }, 'background priority lowered');
  return { sessionGroup };
}
