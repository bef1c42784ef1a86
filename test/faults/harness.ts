import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, inject } from 'vitest';
import pg from 'pg';
import { Redis } from 'ioredis';
import { createDb, type Db } from '../../src/db/database.ts';
import { startSandbox, type SandboxCall, type SandboxServer } from '../../src/websms/sandbox.ts';
import { freePort, spawnRole, type ServiceProcess } from '../support/service-processes.ts';
import { startPrivateRedis, type PrivateRedis } from '../support/private-redis.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';

// One fault scenario's world: the real service as separate processes (an API and worker processes,
// `node src/run.mjs src/main.ts <role>`), a database cloned from the run's migrated template, a
// queue prefix of its own, the WebSMS sandbox (in this process, so its record of calls is at hand),
// and, where the scenario injects an outage, a private redis-server and/or a TCP proxy in front of
// PostgreSQL. The machine's shared PostgreSQL and Redis are never stopped or reconfigured.
//
// The checks at the end read only the two independent records of what happened: the sandbox's calls
// (what WebSMS would have received and charged) and the table (what the service believes).

/** Tight enough that a backlog forms within seconds; checked against the sandbox's arrival times. */
export const RATE_LIMIT = { perWindow: 2, windowMs: 1_500 };
// The slot is taken before the row is claimed and the request written, so the sandbox sees each send
// a little after its slot. Warm, that gap stays under ~150 ms here; the first sends of a worker that
// has just started (cold connections, CPU shared with other starting processes on two cores) arrived
// up to ~700 ms after their slot. The service spaces sends by window + this margin; the check demands
// only the window, so it tolerates that much jitter and still catches any real over-limit burst.
const RATE_MARGIN_MS = 1_000;

export const UNFINISHED = ['pending', 'queued', 'sending'];

export interface Enterprise {
  number: string;
  user: string;
  apiKey: string;
}

export interface HarnessOptions {
  scenario: string;
  enterprises?: number;
  /** Service environment on top of the harness defaults. */
  env?: Record<string, string>;
  /** The service uses a redis-server of its own (killed and restarted by the scenario). */
  privateRedis?: boolean;
  /** The service reaches PostgreSQL through a TCP proxy the scenario can cut or stall. */
  postgresProxy?: boolean;
  /** API processes (not workers) reach Redis through a TCP proxy the scenario can cut or stall. */
  apiRedisProxy?: boolean;
}

export interface SendSpec {
  enterprise?: Enterprise;
  phone?: string;
  text?: string;
  /** false: `?wait=false`, answered 202 at once */
  wait?: boolean;
  idempotencyKey?: string;
  /** the message's callback_url (callbacks must be on: CALLBACK_ALLOWED_HOSTS) */
  callbackUrl?: string;
  /** client-side budget for the whole request */
  timeoutMs?: number;
}

export interface SendResult {
  /** HTTP status, or null when no answer came (connection reset, refused, client timeout) */
  status: number | null;
  json: Record<string, unknown>;
  error: string | undefined;
  ms: number;
  text: string;
  spec: SendSpec;
}

export interface Row {
  id: string;
  enterprise_number: string;
  phone: string;
  text: string;
  status: string;
  provider_ref: string | null;
  message_id: string | null;
  attempts: number;
  error_code: string | null;
  error_message: string | null;
  resent_after_unknown: boolean;
  idempotency_key: string | null;
}

export interface Harness {
  readonly scenario: string;
  readonly sandbox: SandboxServer;
  /** Direct connection to the scenario's database (never through the proxy), for checks. */
  readonly db: Db;
  readonly enterprises: Enterprise[];
  readonly apiUrl: string;
  readonly env: Record<string, string>;
  readonly redis: PrivateRedis | undefined;
  readonly postgresProxy: TcpProxy | undefined;
  readonly apiRedisProxy: TcpProxy | undefined;
  /** Every request sent through send(), with its answer. */
  readonly requests: SendResult[];
  /** Where cleanup writes process logs and the sandbox's calls when asked to keep them. */
  readonly logDir: string;
  startApi(extraEnv?: Record<string, string>): Promise<ServiceProcess>;
  startWorker(extraEnv?: Record<string, string>): Promise<ServiceProcess>;
  processes(): ServiceProcess[];
  send(spec?: SendSpec): Promise<SendResult>;
  rows(): Promise<Row[]>;
  /** Resolves once every row is final; on timeout throws, naming the rows still open. */
  waitAllFinal(timeoutMs: number): Promise<Row[]>;
  /** Log lines of every process so far, `[name] line`. */
  logs(): string[];
  /**
   * Kills everything the scenario started and returns the pids still alive afterwards (none, or a
   * bug). `keepLogs` (a failed test, or FAULT_LOGS=1) writes the logs to logDir first.
   */
  cleanup(options?: { keepLogs?: boolean }): Promise<number[]>;
}

// Safety net: should the test process exit without cleanup (a crash, a timeout kill), take the
// service processes with it instead of leaving them to run against the shared servers.
const everyProcess = new Set<ServiceProcess>();
process.once('exit', () => {
  for (const p of everyProcess) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
});

export async function createHarness(options: HarnessOptions): Promise<Harness> {
  const runId = inject('runId');
  const serverUrl = inject('serverDatabaseUrl');
  const sharedRedisUrl = inject('redisUrl');
  const scenarioId = `${options.scenario.replace(/[^a-z0-9]+/gi, '_').toLowerCase()}_${randomBytes(3).toString('hex')}`;

  const cleanups: Array<() => Promise<unknown>> = [];
  const started: ServiceProcess[] = [];
  try {
    const databaseName = `sms_test_${runId}_${scenarioId}`.slice(0, 63);
    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    try {
      await waitForConnectionSlots(admin);
      await admin.query(`CREATE DATABASE ${databaseName} TEMPLATE ${inject('templateDatabase')}`);
    } finally {
      await admin.end();
    }
    const dbUrl = new URL(serverUrl);
    dbUrl.pathname = `/${databaseName}`;
    const db = createDb(dbUrl.toString(), { max: 4, applicationName: 'fault-test' });
    cleanups.push(() => db.destroy());

    const enterprises: Enterprise[] = Array.from({ length: options.enterprises ?? 3 }, (_, i) => {
      const number = `07${String(i + 1).padStart(2, '0')}`;
      return { number, user: `e${number}@faults.test`, apiKey: `key-${number}-${randomBytes(6).toString('hex')}` };
    });
    for (const e of enterprises) {
      await db.insertInto('enterprises').values({ number: e.number, name: `Fault ${e.number}`, custom_domain: `${e.user} ${e.apiKey}`, active: true }).execute();
    }

    const sandbox = await startSandbox({ accounts: enterprises.map((e) => ({ user: e.user, apiKey: e.apiKey })) });
    cleanups.push(() => sandbox.close());

    let redis: PrivateRedis | undefined;
    let redisUrl = sharedRedisUrl;
    if (options.privateRedis) {
      redis = await startPrivateRedis();
      cleanups.push(() => redis!.close());
      redisUrl = redis.url;
    }

    let postgresProxy: TcpProxy | undefined;
    let serviceDbUrl = dbUrl.toString();
    if (options.postgresProxy) {
      postgresProxy = await startTcpProxy({ host: dbUrl.hostname, port: Number(dbUrl.port || 5432) });
      cleanups.push(() => postgresProxy!.close());
      const proxied = new URL(dbUrl);
      proxied.hostname = '127.0.0.1';
      proxied.port = String(postgresProxy.port);
      serviceDbUrl = proxied.toString();
    }

    let apiRedisProxy: TcpProxy | undefined;
    const apiEnv: Record<string, string> = {};
    if (options.apiRedisProxy) {
      const target = new URL(redisUrl);
      apiRedisProxy = await startTcpProxy({ host: target.hostname, port: Number(target.port || 6379) });
      cleanups.push(() => apiRedisProxy!.close());
      target.hostname = '127.0.0.1';
      target.port = String(apiRedisProxy.port);
      apiEnv.REDIS_URL = target.toString();
    }

    const queuePrefix = `{f${randomBytes(4).toString('hex')}}`;
    if (!options.privateRedis) {
      // Queue keys on the shared Redis: only this scenario's prefix is ever deleted.
      cleanups.push(() => deleteKeys(sharedRedisUrl, queuePrefix));
    }

    const apiPort = await freePort();
    const env: Record<string, string> = {
      DATABASE_URL: serviceDbUrl,
      REDIS_URL: redisUrl,
      WEBSMS_BASE_URL: sandbox.url,
      QUEUE_PREFIX: queuePrefix,
      HOST: '127.0.0.1',
      PORT: String(apiPort),
      LOG_LEVEL: 'info',
      RATE_LIMIT_PER_WINDOW: String(RATE_LIMIT.perWindow),
      RATE_LIMIT_WINDOW_MS: String(RATE_LIMIT.windowMs),
      RATE_LIMIT_MARGIN_MS: String(RATE_MARGIN_MS),
      SEND_WAIT_MS: '3000',
      WEBSMS_TIMEOUT_MS: '2000',
      WORKER_CONCURRENCY: '8',
      SEND_ATTEMPTS: '6',
      RETRY_BACKOFF_MS: '200',
      SWEEP_INTERVAL_MS: '1000',
      SWEEP_PENDING_AFTER_MS: '2000',
      KEEP_FINISHED_JOBS_S: '600',
      ...options.env,
    };
    const apiUrl = `http://127.0.0.1:${apiPort}`;
    const logDir = join(tmpdir(), `sms-faults-${runId}`, scenarioId);
    const requests: SendResult[] = [];
    let seq = 0;
    let names = 0;

    const track = (p: ServiceProcess) => {
      started.push(p);
      everyProcess.add(p);
      return p;
    };

    const harness: Harness = {
      scenario: options.scenario,
      sandbox,
      db,
      enterprises,
      apiUrl,
      env,
      redis,
      postgresProxy,
      apiRedisProxy,
      requests,
      logDir,
      async startApi(extraEnv = {}) {
        const api = track(spawnRole('api', { ...env, ...apiEnv, ...extraEnv }, `api-${++names}`));
        await waitUntil(api, 30_000, async () => {
          const response = await fetch(`${apiUrl}/`, { signal: AbortSignal.timeout(2_000) });
          await response.arrayBuffer();
          return response.status === 200;
        });
        return api;
      },
      async startWorker(extraEnv = {}) {
        const worker = track(spawnRole('worker', { ...env, ...extraEnv }, `worker-${++names}`));
        await waitUntil(worker, 30_000, () => Promise.resolve(worker.output().some((line) => line.includes('"msg":"worker started"'))));
        return worker;
      },
      processes: () => [...started],
      async send(spec = {}) {
        const enterprise = spec.enterprise ?? enterprises[0]!;
        const n = ++seq;
        const body = {
          enterprise_number: enterprise.number,
          phone: spec.phone ?? `+37529${String(1_000_000 + n).slice(-7)}`,
          text: spec.text ?? `${options.scenario} ${enterprise.number} #${n}`,
          ...(spec.callbackUrl ? { callback_url: spec.callbackUrl } : {}),
        };
        const headers: Record<string, string> = { 'content-type': 'application/json' };
        if (spec.idempotencyKey) headers['idempotency-key'] = spec.idempotencyKey;
        const t0 = Date.now();
        const result: SendResult = { status: null, json: {}, error: undefined, ms: 0, text: body.text, spec: { ...spec, enterprise, phone: body.phone, text: body.text } };
        try {
          const response = await fetch(`${apiUrl}/send${spec.wait === false ? '?wait=false' : ''}`, {
            method: 'POST',
            headers,
            body: JSON.stringify(body),
            signal: AbortSignal.timeout(spec.timeoutMs ?? 30_000),
          });
          result.status = response.status;
          const raw = await response.text();
          try {
            result.json = JSON.parse(raw) as Record<string, unknown>;
          } catch {
            result.json = { raw };
          }
        } catch (error) {
          result.error = error instanceof Error ? `${error.name}: ${error.message}${error.cause instanceof Error ? ` (${error.cause.message})` : ''}` : String(error);
        }
        result.ms = Date.now() - t0;
        requests.push(result);
        return result;
      },
      async rows() {
        const rows = await db
          .selectFrom('user_sms_send')
          .select(['id', 'enterprise_number', 'phone', 'text', 'status', 'provider_ref', 'message_id', 'attempts', 'error_code', 'error_message', 'resent_after_unknown', 'idempotency_key'])
          .orderBy('id')
          .execute();
        return rows;
      },
      async waitAllFinal(timeoutMs) {
        const deadline = Date.now() + timeoutMs;
        for (;;) {
          const rows = await harness.rows();
          const open = rows.filter((r) => UNFINISHED.includes(r.status));
          // A slow sandbox records a call when it processes it: the checks need every call on record.
          if (open.length === 0 && sandbox.inFlight() === 0) return rows;
          if (Date.now() > deadline) {
            const sample = open.slice(0, 10).map((r) => `#${r.id} ${r.status} (attempts ${r.attempts}, ${r.error_code ?? '-'})`);
            throw new Error(`${open.length} of ${rows.length} messages not final after ${timeoutMs} ms: ${sample.join(', ')}; process logs in ${logDir}`);
          }
          await sleep(250);
        }
      },
      logs() {
        return started.flatMap((p) => p.output().map((line) => `[${p.name}] ${line}`));
      },
      async cleanup(cleanupOptions = {}) {
        // Killed outright: every check has been made, and a graceful stop could wait on a dependency
        // the scenario broke.
        await Promise.all(started.map((p) => p.kill9()));
        if (cleanupOptions.keepLogs || process.env.FAULT_LOGS) {
          try {
            mkdirSync(logDir, { recursive: true });
            for (const p of started) writeFileSync(join(logDir, `${p.name}.log`), p.output().join('\n'));
            writeFileSync(join(logDir, 'sandbox-calls.json'), JSON.stringify(sandbox.calls(), null, 1));
            console.warn(`${options.scenario}: process logs and WebSMS calls kept in ${logDir}`);
          } catch {
            // logs are a convenience
          }
        }
        for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
        const pids = [...started.map((p) => p.pid), ...(redis?.pid() === undefined ? [] : [redis.pid()!])];
        for (const p of started) everyProcess.delete(p);
        return pids.filter(isAlive);
      },
    };
    return harness;
  } catch (error) {
    await Promise.all(started.map((p) => p.kill9()));
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    throw error;
  }
}

/**
 * A scenario runs up to four service processes at once, each with a pool of DATABASE_POOL_SIZE
 * (default 10) PostgreSQL connections, plus its own few. The server is shared: if someone else holds
 * most of its connections, the scenario would fail with confusing 503s ("too many clients"), so wait
 * a little, then say so.
 */
const CONNECTIONS_NEEDED = 45;

async function waitForConnectionSlots(admin: pg.Client, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { rows } = await admin.query<{ free: number; holders: string }>(
      `SELECT current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int - count(*)::int AS free,
              string_agg(DISTINCT coalesce(datname, '?'), ', ') AS holders
         FROM pg_stat_activity WHERE backend_type = 'client backend'`,
    );
    const { free, holders } = rows[0]!;
    if (free >= CONNECTIONS_NEEDED) return;
    if (Date.now() > deadline) {
      throw new Error(`the shared PostgreSQL has ${free} free connections, the scenario needs ~${CONNECTIONS_NEEDED}; held by databases: ${holders}`);
    }
    await sleep(1_000);
  }
}

/** Polls `ready` until true; fails early, with the process's output, if the process exits first. */
async function waitUntil(p: ServiceProcess, timeoutMs: number, ready: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (p.child.exitCode !== null || p.child.signalCode !== null) {
      throw new Error(`${p.name} exited during start-up: ${p.output().slice(-20).join('\n')}`);
    }
    if (await ready().catch(() => false)) return;
    if (Date.now() > deadline) {
      await p.kill9();
      throw new Error(`${p.name} not ready within ${timeoutMs} ms: ${p.output().slice(-20).join('\n')}`);
    }
    await sleep(100);
  }
}

/**
 * The afterAll of a scenario file: kill everything (keeping the logs when a test failed), then fail
 * the file if any process it started is still alive.
 */
export function cleanUpAfterAll(harness: () => Harness | undefined): void {
  // vitest 5 hands afterAll its fixtures first and insists on a destructuring pattern for them.
  // eslint-disable-next-line no-empty-pattern
  afterAll(async ({}, suite) => {
    const survivors = await harness()?.cleanup({ keepLogs: anyFailed(suite) });
    expect(survivors ?? [], 'processes still running after cleanup').toEqual([]);
  });
}

/** Did any test of the suite fail? (Then the scenario's logs are worth keeping.) */
function anyFailed(suite: { tasks: readonly unknown[] }): boolean {
  return suite.tasks.some((task) => {
    const t = task as { result?: { state?: string }; tasks?: readonly unknown[] };
    return t.result?.state === 'fail' || (t.tasks !== undefined && anyFailed({ tasks: t.tasks }));
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function deleteKeys(redisUrl: string, prefix: string): Promise<void> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.del(...keys);
    } while (cursor !== '0');
  } finally {
    redis.disconnect();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` until it returns a value, or throws `what` after timeoutMs. */
export async function waitFor<T>(what: string, timeoutMs: number, check: () => T | undefined | Promise<T | undefined>, intervalMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

export interface DeliveryCheckOptions {
  /** Rows whose outcome the scenario made genuinely unknowable (lookups impossible). */
  unknownAllowed?: (row: Row) => boolean;
}

/**
 * The guarantees, from the two records: every message final (`unknown` only where allowed); none
 * accepted twice by WebSMS unless the sandbox hid an accepted send from lookups, and then the row
 * says so (`resent_after_unknown`); no `success` without an acceptance and no `failed` message that
 * WebSMS has; nothing sent that has no row; no enterprise over its rolling-window limit as seen by
 * WebSMS's arrival times. Returns the violations, one readable line each (empty: all held).
 */
export function deliveryViolations(rows: Row[], calls: SandboxCall[], enterprises: Enterprise[], options: DeliveryCheckOptions = {}): string[] {
  const problems: string[] = [];
  const accepted = calls.filter((c) => c.endpoint === 'send/sms' && c.messageId !== undefined);
  const acceptedByRef = new Map<string, SandboxCall[]>();
  for (const call of accepted) {
    const list = acceptedByRef.get(call.customId ?? '') ?? [];
    list.push(call);
    acceptedByRef.set(call.customId ?? '', list);
  }

  const refs = new Set<string>();
  for (const row of rows) {
    const label = `message #${row.id} (${row.enterprise_number}, ${row.status}${row.error_code ? ` ${row.error_code}` : ''})`;
    if (row.provider_ref) refs.add(row.provider_ref);
    if (UNFINISHED.includes(row.status)) problems.push(`${label} never reached a final state`);
    if (row.status === 'unknown' && !options.unknownAllowed?.(row)) problems.push(`${label} ended unknown although its outcome was knowable`);
    const sends = row.provider_ref ? (acceptedByRef.get(row.provider_ref) ?? []) : [];
    const visible = sends.filter((c) => !c.hidden);
    if (visible.length > 1) problems.push(`${label} accepted ${visible.length} times by WebSMS`);
    if (sends.length > 1 && !row.resent_after_unknown) problems.push(`${label} accepted ${sends.length} times (a hidden send among them) without resent_after_unknown: a silent duplicate`);
    if (row.status === 'success' && sends.length === 0) problems.push(`${label} recorded success but WebSMS never accepted it`);
    if (row.status === 'failed' && visible.length > 0) problems.push(`${label} recorded failed but WebSMS accepted it`);
  }
  for (const call of accepted) {
    if (!refs.has(call.customId ?? '')) problems.push(`WebSMS accepted custom_id ${call.customId ?? '(none)'} (${call.text ?? ''}) that no row knows`);
  }

  for (const enterprise of enterprises) {
    const times = calls
      .filter((c) => c.endpoint === 'send/sms' && c.user === enterprise.user)
      .map((c) => c.at)
      .sort((a, b) => a - b);
    for (let i = 0; i + RATE_LIMIT.perWindow < times.length; i += 1) {
      const spanMs = times[i + RATE_LIMIT.perWindow]! - times[i]!;
      if (spanMs < RATE_LIMIT.windowMs) {
        problems.push(`enterprise ${enterprise.number}: ${RATE_LIMIT.perWindow + 1} send attempts within ${spanMs} ms (limit ${RATE_LIMIT.perWindow} per ${RATE_LIMIT.windowMs} ms)`);
      }
    }
  }
  return problems;
}

/** Accepted sends (hidden ones included) for one row. */
export function acceptedFor(calls: SandboxCall[], row: Row): SandboxCall[] {
  return calls.filter((c) => c.endpoint === 'send/sms' && c.messageId !== undefined && c.customId === row.provider_ref);
}
