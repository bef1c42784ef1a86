import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { Redis } from 'ioredis';
import {
  createIsolatedDatabase,
  freePort,
  spawnNode,
  buildService,
  spawnRole,
  waitForHttp,
  type IsolatedDatabase,
  type ServiceProcess,
} from '../support/service-processes.ts';

// Everything the benchmark starts, and the one place that takes it all down again: its own
// database, its own queue prefixes, a WebSMS sandbox process and service processes (API + workers),
// all on 127.0.0.1. Teardown runs in reverse order and is idempotent, so a failure, a timeout or
// Ctrl-C anywhere still leaves nothing behind on the shared PostgreSQL and Redis.

/** Sandbox accounts: one for the service's enterprises, one for direct load, one for the limited enterprise. */
export const ACCOUNTS = {
  service: { user: 'bench@sandbox.test', apiKey: 'bench-key-0001' },
  direct: { user: 'direct@sandbox.test', apiKey: 'direct-key-0002' },
  limited: { user: 'limited@sandbox.test', apiKey: 'limited-key-0003' },
} as const;

export class Teardown {
  private readonly steps: Array<{ name: string; run: () => Promise<unknown> }> = [];
  private running: Promise<string[]> | undefined;

  add(name: string, run: () => Promise<unknown>): void {
    this.steps.push({ name, run });
  }

  /** Runs every step once, newest first; returns the failures instead of throwing. */
  run(): Promise<string[]> {
    this.running ??= (async () => {
      const failures: string[] = [];
      for (const step of this.steps.reverse()) {
        try {
          await step.run();
        } catch (error) {
          failures.push(`${step.name}: ${error instanceof Error ? error.message : String(error)}`);
        }
      }
      return failures;
    })();
    return this.running;
  }
}

export interface Sandbox {
  process: ServiceProcess;
  /** base URL of the WebSMS API, as the service's WEBSMS_BASE_URL */
  apiUrl: string;
  /** http://127.0.0.1:port */
  origin: string;
  setLatency(ms: number): Promise<void>;
  calls(): Promise<SandboxCallRecord[]>;
  reset(): Promise<void>;
}

/** GET /__sandbox/calls, the fields the checks read. */
export interface SandboxCallRecord {
  at: number;
  endpoint: string;
  user: string | null;
  customId: string | null;
  result: string;
  messageId?: number;
}

export interface Bench {
  runId: string;
  database: IsolatedDatabase;
  /** one connection to the bench database, for seeding and checks */
  sql: pg.Client;
  redis: Redis;
  redisUrl: string;
  sandbox: Sandbox;
  teardown: Teardown;
  profileDir: string | undefined;
  nodeOptions: string | undefined;
  /** every service process started, pid → "<stack>/<role>", to name their CPU profiles */
  processNames: Map<number, string>;
}

async function control(origin: string, path: string, init?: RequestInit): Promise<unknown> {
  const response = await fetch(`${origin}/__sandbox/${path}`, { ...init, signal: AbortSignal.timeout(30_000) });
  if (!response.ok) throw new Error(`sandbox ${path}: HTTP ${response.status}`);
  return response.json();
}

export async function startBench(options: { databaseUrl: string; redisUrl: string; profileDir: string | undefined; nodeOptions: string | undefined }): Promise<Bench> {
  // The service as it ships: compiled (npm run build), as npm start, the ops script, the systemd
  // units and the image run it.
  buildService();
  const teardown = new Teardown();
  const runId = randomBytes(4).toString('hex');
  try {
    const database = await createIsolatedDatabase(options.databaseUrl, `sms_bench_${runId}`);
    teardown.add('drop database', () => database.drop());
    const sql = new pg.Client({ connectionString: database.url, application_name: 'user-sms-bench' });
    await sql.connect();
    teardown.add('close database connection', () => sql.end());

    const redis = new Redis(options.redisUrl, { maxRetriesPerRequest: 3, connectTimeout: 5_000 });
    teardown.add('close redis', () => Promise.resolve(redis.disconnect()));

    const port = await freePort();
    const accounts = Object.values(ACCOUNTS)
      .map((a) => `${a.user} ${a.apiKey}`)
      .join(';');
    // Its own process, so the sandbox does not share the load generator's event loop.
    const sandboxProcess = spawnNode(
      ['src/run.mjs', 'src/websms/sandbox-main.ts'],
      // Delivery reports final within 0.3 s: the delivery phase's first look-up finds them final.
      { SANDBOX_PORT: String(port), SANDBOX_HOST: '127.0.0.1', SANDBOX_LATENCY_MS: '0', SANDBOX_ACCOUNTS: accounts, SANDBOX_DELIVERY_MS: '300' },
      'sandbox',
    );
    teardown.add('stop sandbox', () => sandboxProcess.stop(5_000));
    const origin = `http://127.0.0.1:${port}`;
    await waitForHttp(`${origin}/__sandbox/calls`, 30_000);
    const sandbox: Sandbox = {
      process: sandboxProcess,
      apiUrl: `${origin}/api`,
      origin,
      async setLatency(ms) {
        await control(origin, `latency?ms=${ms}`, { method: 'POST' });
      },
      async calls() {
        return (await control(origin, 'calls')) as SandboxCallRecord[];
      },
      async reset() {
        await control(origin, 'reset', { method: 'POST' });
      },
    };
    if (options.profileDir) mkdirSync(options.profileDir, { recursive: true });
    return {
      runId,
      database,
      sql,
      redis,
      redisUrl: options.redisUrl,
      sandbox,
      teardown,
      profileDir: options.profileDir && resolve(options.profileDir),
      nodeOptions: options.nodeOptions,
      processNames: new Map(),
    };
  } catch (error) {
    await teardown.run();
    throw error;
  }
}

/** Enterprise rows `${prefix}${i}` for i in [from, from + count), all on one sandbox account. */
export async function seedEnterprises(bench: Bench, prefix: string, from: number, count: number, account: { user: string; apiKey: string }): Promise<void> {
  await bench.sql.query(
    `INSERT INTO enterprises (number, name, custom_domain, active)
     SELECT $1 || i, 'Bench ' || $1 || i, $2, true FROM generate_series($3::int, $4::int) AS i`,
    [prefix, `${account.user} ${account.apiKey}`, from, from + count - 1],
  );
}

/** Deletes every Redis key under the prefix (SCAN, never KEYS or FLUSH: the server is shared). */
export async function deleteKeys(redis: Redis, prefix: string): Promise<number> {
  let cursor = '0';
  let deleted = 0;
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) deleted += await redis.unlink(...keys);
  } while (cursor !== '0');
  return deleted;
}

export async function countKeys(redis: Redis, pattern: string): Promise<{ keys: string[] }> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  return { keys };
}

const SERVICE_VARIABLES =
  /^(PORT|HOST|WEBSMS_.*|RATE_LIMIT_.*|REQUEST_RATE_LIMIT_.*|SEND_.*|WORKER_.*|RETRY_.*|SWEEP_.*|KEEP_.*|DAILY_CAP_.*|IDEMPOTENCY_.*|API_TOKENS|ADMIN_.*|DASHBOARD_.*|TRUSTED_PROXIES|BODY_LIMIT_BYTES)$/;

const HEAP_PROBE = fileURLToPath(new URL('./heap-probe.mjs', import.meta.url));
const SEND_PHASES = fileURLToPath(new URL('./send-phases.mjs', import.meta.url));

/**
 * Live heap of a service process in MB, after a full collection (heap-probe.mjs answers SIGUSR2 on
 * its stderr); undefined if it does not answer within 10 s.
 */
export async function liveHeapMb(process_: ServiceProcess): Promise<number | undefined> {
  const seen = process_.output().filter((line) => line.startsWith('bench-heap ')).length;
  process_.child.kill('SIGUSR2');
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const lines = process_.output().filter((line) => line.startsWith('bench-heap '));
    if (lines.length > seen) {
      const { heapUsed } = JSON.parse(lines[lines.length - 1]!.slice('bench-heap '.length)) as { heapUsed: number };
      return Math.round((heapUsed / 1048576) * 10) / 10;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return undefined;
}

export interface Service {
  prefix: string;
  apiUrl: string;
  api: ServiceProcess;
  workers: ServiceProcess[];
  /** delivery look-ups, callbacks and the sweepers, at a lower CPU priority */
  background: ServiceProcess;
  /** where the service's processes write each send's phases (send-phases.mjs, phase-breakdown.ts) */
  phasesDir: string;
  stop(): Promise<void>;
}

/**
 * As `npm start` runs the service: an API process, `workers` worker processes that only send, and
 * the background process, on their own queue prefix. `env` adds service
 * configuration (RATE_LIMIT_*, WORKER_CONCURRENCY …). Its keys are removed at teardown.
 */
export async function startService(bench: Bench, name: string, workers: number, env: Record<string, string>, logLevel: string): Promise<Service> {
  const prefix = `{bench${bench.runId}${name}}`;
  bench.teardown.add(`delete redis keys ${prefix}`, () => deleteKeys(bench.redis, prefix));
  const port = await freePort();
  // The service runs with the benchmark's configuration, not with what the caller's shell exports
  // (API_TOKENS would refuse the load, a RATE_LIMIT_* would change what is measured): an empty
  // value means "unset" to the service's configuration.
  const inherited = Object.fromEntries(Object.keys(process.env).filter((name) => SERVICE_VARIABLES.test(name)).map((name) => [name, '']));
  const phasesDir = mkdtempSync(join(tmpdir(), 'bench-send-phases-'));
  bench.teardown.add(`remove ${phasesDir}`, () => Promise.resolve(rmSync(phasesDir, { recursive: true, force: true })));
  const common: Record<string, string> = {
    ...inherited,
    HOST: '127.0.0.1',
    DATABASE_URL: bench.database.url,
    REDIS_URL: bench.redisUrl,
    WEBSMS_BASE_URL: bench.sandbox.apiUrl,
    QUEUE_PREFIX: prefix,
    LOG_LEVEL: logLevel,
    WORKER_PROCESSES: '0',
    BENCH_SEND_PHASES_DIR: phasesDir,
    ...env,
  };
  const nodeOptions = [
    process.env.NODE_OPTIONS,
    `--expose-gc --import ${HEAP_PROBE} --import ${SEND_PHASES}`,
    bench.nodeOptions,
    bench.profileDir && `--cpu-prof --cpu-prof-dir=${bench.profileDir}`,
  ]
    .filter(Boolean)
    .join(' ');
  if (nodeOptions) common.NODE_OPTIONS = nodeOptions;

  const started: ServiceProcess[] = [];
  let stopped: Promise<void> | undefined;
  const stop = () =>
    (stopped ??= (async () => {
      // Workers first (they finish their jobs), then the API (it answers its waiting callers).
      await Promise.all(started.filter((p) => p.name !== 'api').map((p) => p.stop(20_000)));
      await Promise.all(started.filter((p) => p.name === 'api').map((p) => p.stop(20_000)));
    })());
  bench.teardown.add(`stop service ${name}`, stop);

  const workerProcesses: ServiceProcess[] = [];
  for (let i = 0; i < workers; i += 1) {
    const worker = spawnRole('worker', { ...common, WORKER_BACKGROUND: 'false' }, `worker${i + 1}`, { compiled: true });
    started.push(worker);
    workerProcesses.push(worker);
  }
  const background = spawnRole('background', common, 'background', { compiled: true });
  started.push(background);
  const api = spawnRole('api', { ...common, PORT: String(port) }, 'api', { compiled: true });
  started.push(api);
  for (const p of started) bench.processNames.set(p.pid, `${name}/${p.name}`);
  const apiUrl = `http://127.0.0.1:${port}`;
  try {
    await Promise.race([
      waitForHttp(`${apiUrl}/health`, 60_000),
      ...started.map((p) => p.exited.then((code) => Promise.reject(new Error(`${p.name} exited (${code}) during start-up:\n${p.output().slice(-20).join('\n')}`)))),
    ]);
    await waitForWorkers(workerProcesses);
    await waitForWorkers([background], 'background work started');
  } catch (error) {
    await stop();
    throw error;
  }
  return { prefix, apiUrl, api, workers: workerProcesses, background, phasesDir, stop };
}

async function waitForWorkers(workers: ServiceProcess[], started = 'worker started', timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!workers.every((w) => w.output().some((line) => line.includes(started)))) {
    const dead = workers.find((w) => w.child.exitCode !== null || w.child.signalCode !== null);
    if (dead) throw new Error(`${dead.name} exited during start-up:\n${dead.output().slice(-20).join('\n')}`);
    if (Date.now() > deadline) throw new Error('workers did not start in time');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A callback receiver for the delivery phase, in a process of its own (callback-counter.ts). */
export async function startCallbackReceiver(): Promise<{ url: string; pid: number; close(): Promise<void> }> {
  const port = await freePort();
  const receiver = spawnNode(['src/run.mjs', 'test/bench/callback-counter.ts'], { RECEIVER_PORT: String(port) }, 'receiver');
  try {
    await waitForHttp(`http://127.0.0.1:${port}/`, 30_000, [204]);
  } catch (error) {
    await receiver.stop(5_000);
    throw error;
  }
  return {
    url: `http://127.0.0.1:${port}/events`,
    pid: receiver.pid,
    close: async () => {
      await receiver.stop(5_000);
    },
  };
}
