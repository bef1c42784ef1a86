import { sql, type Kysely } from 'kysely';

// What operators did to a message (`npm run jobs -- retry|drop`), oldest first: an array of
// {action, at, by, from, to, job, reason}. Kept on the row because the row is the truth and outlives
// its queue job; an array because a message can be retried more than once, and each time matters
// when someone later asks why it was sent twice or never.

export async function up(db: Kysely<unknown>): Promise<void> {
  // A constant default: PostgreSQL adds the column without rewriting the table.
  await sql`ALTER TABLE user_sms_send ADD COLUMN IF NOT EXISTS operator_actions JSONB NOT NULL DEFAULT '[]'::jsonb`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE user_sms_send DROP COLUMN IF EXISTS operator_actions`.execute(db);
}
