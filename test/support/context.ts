import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { inject } from 'vitest';
import pg from 'pg';
import { loadConfig, type Config } from '../../src/config.ts';
import { createDb, type Db } from '../../src/db/database.ts';
import { createLogger, type Logger } from '../../src/logger.ts';
import { startApi, startWorker, type Running, type RunningApi } from '../../src/roles.ts';
import { startSandbox, type SandboxOptions, type SandboxServer } from '../../src/websms/sandbox.ts';
import type { RedisClient } from '../../src/redis-connection.ts';
import { connectTestRedis, deleteKeys, testRedisEnv } from './test-redis.ts';

// Each test file gets its own database (cloned from the run's migrated template), its own queue
// prefix, its own WebSMS sandbox and a captured log, so files run in parallel without meeting.

export interface TestEnv {
  config: Config;
  databaseUrl: string;
  db: Db;
  /** the test's own connection: one server, or the Cluster in the `cluster` project */
  redis: RedisClient;
  sandbox: SandboxServer;
  logger: Logger;
  /** Every log line written so far, raw JSON. */
  logLines(): string[];
  /** Starts the API and `workers` worker roles in this process. */
  startService(options?: { workers?: number; api?: boolean }): Promise<{ api: RunningApi | undefined; workers: Running[] }>;
  startWorker(): Promise<Running>;
  seedEnterprise(enterprise: { number: string; name?: string | null; customDomain: string | null; active?: boolean | null }): Promise<void>;
  cleanup(): Promise<void>;
}

export const DEMO_USER = 'demo@example.by';
export const DEMO_KEY = 'k3y-Secret-0367-abcdef';

export async function createTestEnv(env: Record<string, string> = {}, options: { sandbox?: Pick<SandboxOptions, 'deliveryMs'> } = {}): Promise<TestEnv> {
  const runId = inject('runId');
  const template = inject('templateDatabase');
  const serverUrl = inject('serverDatabaseUrl');
  const redisUrl = inject('redisUrl');

  const name = `sms_test_${runId}_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name} TEMPLATE ${template}`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const databaseUrl = url.toString();

  const sandbox = await startSandbox({ accounts: [{ user: DEMO_USER, apiKey: DEMO_KEY, sms: 39.056508, viber: 0 }], ...options.sandbox });
  const queuePrefix = `{t${randomBytes(4).toString('hex')}}`;
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    ...testRedisEnv(redisUrl),
    WEBSMS_BASE_URL: sandbox.url,
    QUEUE_PREFIX: queuePrefix,
    PORT: '0',
    LOG_LEVEL: 'debug',
    SEND_WAIT_MS: '5000',
    WEBSMS_TIMEOUT_MS: '500',
    RETRY_BACKOFF_MS: '50',
    WORKER_CONCURRENCY: '8',
    // Test files run in parallel against one PostgreSQL: keep each process's share small.
    DATABASE_POOL_SIZE: '5',
    ...env,
  });

  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      callback();
    },
  });
  const logger = createLogger('debug', sink);
  const db = createDb(databaseUrl, { max: 4 });
  const redis = connectTestRedis(redisUrl);
  const running: Running[] = [];

  const env_: TestEnv = {
    config,
    databaseUrl,
    db,
    redis,
    sandbox,
    logger,
    logLines: () => [...lines],
    async startService(options = {}) {
      const workers: Running[] = [];
      for (let i = 0; i < (options.workers ?? 1); i += 1) workers.push(await env_.startWorker());
      let api: RunningApi | undefined;
      if (options.api !== false) {
        api = await startApi(config, logger);
        running.push(api);
      }
      return { api, workers };
    },
    async startWorker() {
      const worker = await startWorker(config, logger);
      running.push(worker);
      return worker;
    },
    async seedEnterprise(e) {
      await db
        .insertInto('enterprises')
        .values({ number: e.number, name: e.name ?? `Enterprise ${e.number}`, custom_domain: e.customDomain, active: e.active === undefined ? true : e.active })
        .execute();
    },
    async cleanup() {
      for (const r of running.reverse()) await r.stop().catch(() => undefined);
      await sandbox.close();
      await db.destroy();
      await deleteKeys(redis, `${queuePrefix}*`);
      redis.disconnect();
    },
  };
  return env_;
}

/** Polls until `check` returns a value (not undefined), or fails after timeoutMs. */
export async function eventually<T>(check: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000, intervalMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

export async function postJson(baseUrl: string, path: string, body: unknown, headers: Record<string, string> = {}) {
  const response = await fetch(`${baseUrl}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await response.text();
  let json: Record<string, unknown> = {};
  try {
    json = JSON.parse(text) as Record<string, unknown>;
  } catch {
    // leave empty: the test asserts on status and text
  }
  return { status: response.status, json, text, headers: response.headers };
}
