import { sql, type Kysely } from 'kysely';

// SHA-256 hashes of the keys in a message's status_url (src/messages/status-key.ts): a few, because an
// Idempotency-Key replay hands out a fresh key, the first answer having been lost. Rows written before
// this column, and refused requests, have none: only tokens and operators can read those.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE user_sms_send ADD COLUMN IF NOT EXISTS status_key_hashes BYTEA[]`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE user_sms_send DROP COLUMN IF EXISTS status_key_hashes`.execute(db);
}
