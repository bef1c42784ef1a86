import { sql, type Kysely } from 'kysely';

// callback_events.webhook_id keeps no index (src/callbacks). Frozen once landed; never imports
// application code.
//
// The id is random (a UUID's 122 bits) and nothing looks an event up by it, so its unique index only
// cost an entry for every version of every event row: about three per event, inserted, leased and
// finished.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE callback_events DROP CONSTRAINT IF EXISTS callback_events_webhook_id_key`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE callback_events ADD CONSTRAINT callback_events_webhook_id_key UNIQUE (webhook_id)`.execute(db);
}
