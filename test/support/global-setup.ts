import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { TestProject } from 'vitest/node';
import pg from 'pg';
import { createDb } from '../../src/db/database.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    templateDatabase: string;
    serverDatabaseUrl: string;
    redisUrl: string;
    runId: string;
  }
}

const DEFAULT_DATABASE_URL = 'postgresql://postgres@127.0.0.1:5432/postgres';
const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

function dockerAvailable(): boolean {
  try {
    execFileSync('docker', ['info'], { stdio: 'ignore', timeout: 5_000 });
    return true;
  } catch {
    return false;
  }
}

/** Real servers from DATABASE_URL / REDIS_URL; containers only when neither is set and Docker runs. */
async function servers(): Promise<{ databaseUrl: string; redisUrl: string; stop: () => Promise<void> }> {
  const databaseUrl = process.env.DATABASE_URL;
  const redisUrl = process.env.REDIS_URL;
  if (databaseUrl || redisUrl || !dockerAvailable()) {
    return { databaseUrl: databaseUrl ?? DEFAULT_DATABASE_URL, redisUrl: redisUrl ?? DEFAULT_REDIS_URL, stop: async () => {} };
  }
  const { GenericContainer } = await import('testcontainers');
  const postgres = await new GenericContainer('postgres:15')
    .withEnvironment({ POSTGRES_HOST_AUTH_METHOD: 'trust' })
    .withExposedPorts(5432)
    .start();
  const redis = await new GenericContainer('redis:7').withExposedPorts(6379).start();
  return {
    databaseUrl: `postgresql://postgres@${postgres.getHost()}:${postgres.getMappedPort(5432)}/postgres`,
    redisUrl: `redis://${redis.getHost()}:${redis.getMappedPort(6379)}`,
    stop: async () => {
      await Promise.all([postgres.stop(), redis.stop()]);
    },
  };
}

/** One migrated template database per run; every test file clones its own from it. */
export default async function setup(project: TestProject) {
  const { databaseUrl, redisUrl, stop } = await servers();
  const runId = `${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
  const template = `sms_test_${runId}_tpl`;
  const admin = new pg.Client({ connectionString: databaseUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${template}`);
  const templateUrl = new URL(databaseUrl);
  templateUrl.pathname = `/${template}`;
  const db = createDb(templateUrl.toString(), { max: 1 });
  await migrateToLatest(db);
  await db.destroy();
  await admin.end();

  project.provide('templateDatabase', template);
  project.provide('serverDatabaseUrl', databaseUrl);
  project.provide('redisUrl', redisUrl);
  project.provide('runId', runId);

  return async () => {
    const cleanup = new pg.Client({ connectionString: databaseUrl });
    await cleanup.connect();
    const { rows } = await cleanup.query<{ datname: string }>(
      `SELECT datname FROM pg_database WHERE datname LIKE $1`,
      [`sms_test_${runId}_%`],
    );
    // Keep the databases of a failed run for inspection, as long as someone asks for it.
    if (!process.env.KEEP_TEST_DATABASES) {
      for (const { datname } of rows) await cleanup.query(`DROP DATABASE IF EXISTS ${datname} WITH (FORCE)`);
    }
    await cleanup.end();
    await stop();
  };
}
