import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { cpus } from 'node:os';
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
    `SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name IN ('user-sms-api', 'user-sms-worker', 'user-sms-background')`,
    [database],
  );
  return rows.map((r) => r.pid).filter((pid) => commandOf(pid).startsWith('postgres'));
}

export interface ProcessGroups {
  api: number[];
  workers: number[];
  /** the background process (delivery look-ups, callbacks), as npm start runs it */
  background: number[];
  sandbox: number[];
  redis: number[];
  postgres: number[];
}

export type Group = keyof ProcessGroups | 'loadgen';
export const GROUPS: Group[] = ['api', 'workers', 'background', 'postgres', 'redis', 'sandbox', 'loadgen'];

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

// What PostgreSQL does per message: the transactions it commits on the bench database (every
// statement outside BEGIN … COMMIT is one: a fair count of round trips; the bench's own few queries
// are in it too), the WAL it generates (the server's whole WAL, so a bench on a
// server others use counts their writes too) and the row versions by table, HOT updates apart (an
// update that changes no indexed column and finds room on its page writes no index entry). The table
// counts are the server's statistics, which a backend flushes at most once a second: a snapshot taken
// right after a run may miss its last second.

export interface TableWrites {
  inserted: number;
  updated: number;
  /** of `updated`, those that wrote no index entries */
  hot: number;
  deleted: number;
}

export interface PgWriteSnapshot {
  transactions: number;
  walBytes: bigint;
  tables: Map<string, TableWrites>;
}

export interface PgWritesPerMessage {
  transactions: number;
  /** commands the Redis server processed per message (set by the caller that counted them) */
  redisCommands?: number;
  walBytes: number;
  /** row versions per message by table; tables with none left out */
  tables: Record<string, TableWrites>;
}

export async function pgWriteSnapshot(sql: pg.Client): Promise<PgWriteSnapshot> {
  const wal = await sql.query<{ lsn: string; xacts: string }>(
    `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::text AS lsn,
            (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()) AS xacts`,
  );
  const { rows } = await sql.query<{ relname: string; ins: string; upd: string; hot: string; del: string }>(
    `SELECT relname, n_tup_ins AS ins, n_tup_upd AS upd, n_tup_hot_upd AS hot, n_tup_del AS del FROM pg_stat_user_tables`,
  );
  const tables = new Map(rows.map((r) => [r.relname, { inserted: Number(r.ins), updated: Number(r.upd), hot: Number(r.hot), deleted: Number(r.del) }]));
  return { transactions: Number(wal.rows[0]?.xacts ?? 0), walBytes: BigInt(wal.rows[0]?.lsn.split('.')[0] ?? '0'), tables };
}

export function pgWritesBetween(start: PgWriteSnapshot, end: PgWriteSnapshot, messages: number): PgWritesPerMessage {
  const per = (value: number) => (messages === 0 ? 0 : Math.round((value / messages) * 100) / 100);
  const tables: Record<string, TableWrites> = {};
  for (const [name, after] of end.tables) {
    const before = start.tables.get(name) ?? { inserted: 0, updated: 0, hot: 0, deleted: 0 };
    const diff = { inserted: per(after.inserted - before.inserted), updated: per(after.updated - before.updated), hot: per(after.hot - before.hot), deleted: per(after.deleted - before.deleted) };
    if (diff.inserted + diff.updated + diff.deleted > 0) tables[name] = diff;
  }
  return { transactions: per(end.transactions - start.transactions), walBytes: messages === 0 ? 0 : Math.round(Number(end.walBytes - start.walBytes) / messages), tables };
}

/** One line: "4.2 statements; 5.2 kB WAL; user_sms_send +1 ~2 (1 HOT); callback_events +2 ~2". */
export function describeWrites(writes: PgWritesPerMessage): string {
  const tables = Object.entries(writes.tables).map(([name, t]) => {
    const parts = [t.inserted > 0 ? `+${t.inserted}` : '', t.updated > 0 ? `~${t.updated}${t.hot > 0 ? ` (${t.hot} HOT)` : ''}` : '', t.deleted > 0 ? `-${t.deleted}` : ''];
    return `${name} ${parts.filter(Boolean).join(' ')}`;
  });
  const redis = writes.redisCommands === undefined ? [] : [`Redis ${writes.redisCommands} commands`];
  return [`${writes.transactions} statements`, `${(writes.walBytes / 1024).toFixed(1)} kB WAL`, ...tables, ...redis].join('; ');
}

/** Commands the Redis server has processed so far (all clients: on a shared server, others' too). */
export async function redisCommandCount(redis: Redis): Promise<number> {
  const info = await redis.info('stats');
  return Number(/^total_commands_processed:(\d+)/m.exec(info)?.[1] ?? 0);
}

/** What one request and its answer between two processes cost on this machine, measured one at a time. */
export interface RoundTripCost {
  /** µs from the request's send to the answer's arrival */
  wallUs: number;
  /** µs of CPU per round trip in the asking process (the bench) */
  clientCpuUs: number;
  /** µs of CPU per round trip in the answering process; null when it is not visible from here */
  serverCpuUs: number | null;
}

export interface RoundTripCosts {
  /** with the machine idle: every hop wakes a process whose CPU may be asleep */
  idle: { postgres: RoundTripCost; redis: RoundTripCost };
  /** with every CPU kept busy by a spinning process of the lowest priority: the CPUs never sleep */
  busy: { postgres: RoundTripCost; redis: RoundTripCost };
}

const ROUND_TRIPS = 2_000;
const WARM_UP_ROUND_TRIPS = 200;

/**
 * The machine's price of a hop, read before any load: a trivial statement to PostgreSQL and a PING to
 * Redis, one at a time, first with the machine idle, then with every CPU kept awake. A message's path
 * is a chain of such hops (HTTP, statements, Redis scripts, a worker woken), so this is what the idle
 * overhead and the CPU per message are made of before any work is done. It differs widely between
 * machines, and on one machine between idle and busy: on a virtual machine a hop that wakes a sleeping
 * virtual CPU can cost several times one between busy CPUs. Figures from different hosts compare only
 * beside it.
 */
export async function measureRoundTrips(sql: pg.Client, redis: Redis, redisPid: number | undefined): Promise<RoundTripCosts> {
  const statement = { name: 'bench-round-trip', text: 'SELECT 1' };
  const backend = Number((await sql.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid);
  const both = async () => ({
    postgres: await timeRoundTrips(async () => void (await sql.query(statement)), backend),
    redis: await timeRoundTrips(async () => void (await redis.ping()), redisPid),
  });
  const idle = await both();
  const spinners = cpus().map(() => spawn(process.execPath, ['-e', SPIN], { stdio: 'ignore' }));
  try {
    await Promise.all(spinners.map((child) => once(child, 'spawn')));
    return { idle, busy: await both() };
  } finally {
    for (const child of spinners) child.kill('SIGKILL');
  }
}

/**
 * A process that only keeps a CPU awake, at nice 19: it takes what nothing else wants. It stops by
 * itself after SPIN_LIMIT_MS, so a bench interrupted mid-measurement leaves none spinning.
 */
const SPIN_LIMIT_MS = 30_000;
const SPIN = `require('node:os').setPriority(19); const end = Date.now() + ${SPIN_LIMIT_MS}; while (Date.now() < end);`;

async function timeRoundTrips(roundTrip: () => Promise<void>, serverPid: number | undefined): Promise<RoundTripCost> {
  for (let i = 0; i < WARM_UP_ROUND_TRIPS; i += 1) await roundTrip();
  const serverStart = serverPid === undefined ? undefined : cpuSeconds(serverPid);
  const clientStart = process.cpuUsage();
  const started = performance.now();
  for (let i = 0; i < ROUND_TRIPS; i += 1) await roundTrip();
  const wallUs = ((performance.now() - started) * 1_000) / ROUND_TRIPS;
  const client = process.cpuUsage(clientStart);
  const serverEnd = serverPid === undefined ? undefined : cpuSeconds(serverPid);
  return {
    wallUs,
    clientCpuUs: (client.user + client.system) / ROUND_TRIPS,
    serverCpuUs: serverStart === undefined || serverEnd === undefined ? null : ((serverEnd - serverStart) * 1e6) / ROUND_TRIPS,
  };
}

/** "idle: PostgreSQL 323 µs (CPU 181 + 105 µs), Redis …; CPUs busy: …" */
export function describeRoundTrips(costs: RoundTripCosts): string {
  const one = (name: string, c: RoundTripCost) => `${name} ${c.wallUs.toFixed(0)} µs (CPU ${c.clientCpuUs.toFixed(0)}${c.serverCpuUs === null ? '' : ` + ${c.serverCpuUs.toFixed(0)}`} µs)`;
  const both = (c: RoundTripCosts['idle']) => `${one('PostgreSQL', c.postgres)}, ${one('Redis', c.redis)}`;
  return `idle: ${both(costs.idle)}; CPUs busy: ${both(costs.busy)} (CPU: the asking process + the server)`;
}
