import { sql, type Kysely } from 'kysely';

// The daily cap counts an enterprise's rows since midnight at every admission. The documented index
// on enterprise_number alone would walk the enterprise's whole history for that; this one reads only
// today's rows.
//
// On a large existing table the build holds a write lock for its duration (migrations run in a
// transaction). Operators who cannot afford that can create it first, outside any transaction:
//   CREATE INDEX CONCURRENTLY idx_user_sms_enterprise_created ON user_sms_send (enterprise_number, created_at);
// and this migration then does nothing.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`CREATE INDEX IF NOT EXISTS idx_user_sms_enterprise_created ON user_sms_send (enterprise_number, created_at)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX IF EXISTS idx_user_sms_enterprise_created`.execute(db);
}
