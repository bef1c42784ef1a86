import { readdir } from 'node:fs/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { extname, join } from 'node:path';
import { sql } from 'kysely';
import { Migrator, type Migration, type MigrationProvider, type MigrationResult } from 'kysely/migration';
import type { Db } from './database.ts';

const MIGRATIONS_DIR = fileURLToPath(new URL('../../migrations/', import.meta.url));
// .ts when the sources run as they are, .js when they were compiled (npm run build): migrations are
// next to this file either way, compiled with it.
const MIGRATION_EXT = extname(fileURLToPath(import.meta.url));
// Arbitrary, fixed: every process of this service agrees on it, nothing else uses it.
const MIGRATION_LOCK_ID = 8_014_001;

const folderProvider: MigrationProvider = {
  async getMigrations() {
    const files = (await readdir(MIGRATIONS_DIR)).filter((f) => extname(f) === MIGRATION_EXT && !f.endsWith(`.d${MIGRATION_EXT}`)).sort();
    const migrations: Record<string, Migration> = {};
    for (const file of files) {
      migrations[file.slice(0, -MIGRATION_EXT.length)] = (await import(pathToFileURL(join(MIGRATIONS_DIR, file)).href)) as Migration;
    }
    return migrations;
  },
};

/**
 * Applies pending migrations. Safe from several processes at once: a session advisory lock
 * serialises whole runs (Kysely's own lock is taken only after it creates its bookkeeping tables,
 * and two concurrent CREATE TABLE IF NOT EXISTS can still collide in PostgreSQL's catalog).
 */
export async function migrateToLatest(db: Db): Promise<MigrationResult[]> {
  return db.connection().execute(async (connection) => {
    await sql`SELECT pg_advisory_lock(${MIGRATION_LOCK_ID})`.execute(connection);
    try {
      const { error, results } = await new Migrator({ db: connection, provider: folderProvider }).migrateToLatest();
      if (error) throw error instanceof Error ? error : new Error(`migration failed: ${JSON.stringify(error)}`);
      return results ?? [];
    } finally {
      await sql`SELECT pg_advisory_unlock(${MIGRATION_LOCK_ID})`.execute(connection);
    }
  });
}
