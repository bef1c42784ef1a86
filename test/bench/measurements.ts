import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import type pg from 'pg';
import type { Redis } from 'ioredis';

// CPU and memory of the processes a message passes through, read from /proc (Linux). CPU time is
// the steady figure on a shared, noisy machine: it does not depend on who else holds the cores.

const CLOCK_TICKS_PER_S = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** utime + stime of one process, in seconds; undefined once it is gone. */
export function cpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name may hold spaces and parentheses: fields are counted after its closing ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_S;
  } catch {
    return undefined;
  }
}

/** Resident set size in MB; undefined once the process is gone. */
export function rssMb(pid: number): number | undefined {
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return match ? Number(match[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}

function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

/**
 * Redis's pid from INFO, only if that pid is a redis-server visible here (a Redis in a container or on
 * another host reports a pid from another namespace: then its CPU is not measured).
 */
export async function findRedisPid(redis: Redis): Promise<number | undefined> {
  const info = await redis.info('server');
  const pid = Number(/^process_id:(\d+)/m.exec(info)?.[1]);
  return Number.isInteger(pid) && commandOf(pid).startsWith('redis') ? pid : undefined;
}

/**
 * PostgreSQL backends serving the service (application_name user-sms-api / user-sms-worker) on
 * the bench database: the per-connection processes that run our statements. The server's shared
 * background processes (WAL writer, checkpointer) also work for the other users of this server and
 * are left out; the WAL they flush is written by the backends' commits, counted here.
 */
export async function findPostgresBackends(sql: pg.Client, database: string): Promise<number[]> {
  const { rows } = await sql.query<{ pid: number }>(
    `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name IN ('user-sms-api', 'user-sms-worker')`,
    [database],
  );
  return rows.map((r) => r.pid).filter((pid) => commandOf(pid).startsWith('postgres'));
}

export interface ProcessGroups {
  api: number[];
  workers: number[];
  sandbox: number[];
  redis: number[];
  postgres: number[];
}

export type Group = keyof ProcessGroups | 'loadgen';
export const GROUPS: Group[] = ['api', 'workers', 'postgres', 'redis', 'sandbox', 'loadgen'];

interface CpuSnapshot {
  perPid: Map<number, number>;
  groups: ProcessGroups;
  self: NodeJS.CpuUsage;
  at: number;
}

export type CpuByGroup = Record<Group, number | null>;

/**
 * CPU seconds per group between two snapshots. A pid first seen in `end` (a new PostgreSQL backend)
 * counts from zero; a pid gone by `end` is missing from its group (so PostgreSQL's figure is a lower
 * bound when connections close during a run; pools here keep them for 30 s).
 */
export class CpuMeter {
  private readonly resolveGroups: () => Promise<ProcessGroups>;

  constructor(resolveGroups: () => Promise<ProcessGroups>) {
    this.resolveGroups = resolveGroups;
  }

  async snapshot(): Promise<CpuSnapshot> {
    const groups = await this.resolveGroups();
    const perPid = new Map<number, number>();
    for (const pids of Object.values(groups) as number[][]) {
      for (const pid of pids) {
        const cpu = cpuSeconds(pid);
        if (cpu !== undefined) perPid.set(pid, cpu);
      }
    }
    return { perPid, groups, self: process.cpuUsage(), at: performance.now() };
  }

  static between(start: CpuSnapshot, end: CpuSnapshot): CpuByGroup {
    const result = {} as CpuByGroup;
    for (const group of Object.keys(end.groups) as Array<keyof ProcessGroups>) {
      const pids = end.groups[group];
      if (pids.length === 0) {
        result[group] = null;
        continue;
      }
      let total = 0;
      for (const pid of pids) total += (end.perPid.get(pid) ?? 0) - (start.perPid.get(pid) ?? 0);
      result[group] = total;
    }
    // The load generator is this process (autocannon or the paced client), plus reading service logs.
    result.loadgen = (end.self.user + end.self.system - start.self.user - start.self.system) / 1e6;
    return result;
  }
}

export interface RssSample {
  at: number;
  byProcess: Record<string, number | null>;
}

export function sampleRss(processes: Array<{ name: string; pid: number }>): RssSample {
  const byProcess: Record<string, number | null> = {};
  for (const p of processes) byProcess[p.name] = round1(rssMb(p.pid) ?? null);
  return { at: Date.now(), byProcess };
}

function round1(value: number | null): number | null {
  return value === null ? null : Math.round(value * 10) / 10;
}

/** Samples RSS every `everyMs` until stopped. */
export function rssRecorder(processes: Array<{ name: string; pid: number }>, everyMs = 1_000): { stop(): RssSample[] } {
  const samples: RssSample[] = [sampleRss(processes)];
  const timer = setInterval(() => samples.push(sampleRss(processes)), everyMs);
  return {
    stop() {
      clearInterval(timer);
      samples.push(sampleRss(processes));
      return samples;
    },
  };
}
