import { sql, type Kysely } from 'kysely';

// user_sms_send keeps room on each page for a row's later versions (src/delivery/). Frozen once
// landed; never imports application code.
//
// A message's delivery status is written once or more after its send, and touches only unindexed
// columns: PostgreSQL can then write the new version beside the old one without an entry in any of
// the table's thirteen indexes (a HOT update), but only if the page has room for it. Packed full
// (fillfactor 100, the default), about half of these updates found none and wrote thirteen index
// entries each. 80 leaves a fifth of each new page for them; existing pages are left as they are until
// they are rewritten. A storage setting only: no column, index or row changes.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE user_sms_send SET (fillfactor = 80)`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE user_sms_send RESET (fillfactor)`.execute(db);
}
