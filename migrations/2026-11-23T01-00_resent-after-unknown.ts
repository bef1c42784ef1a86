import { sql, type Kysely } from 'kysely';

// A message resent because WebSMS said it had never seen the first attempt. Should WebSMS have
// been wrong, this is where a duplicate can come from: the row says so instead of staying silent.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE user_sms_send ADD COLUMN IF NOT EXISTS resent_after_unknown BOOLEAN NOT NULL DEFAULT false`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE user_sms_send DROP COLUMN IF EXISTS resent_after_unknown`.execute(db);
}
