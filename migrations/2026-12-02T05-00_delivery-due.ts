import { sql, type Kysely } from 'kysely';

// The delivery poller's queue moves out of user_sms_send into a narrow table of its own (src/delivery/).
// Frozen once landed; never imports application code.
//
// In user_sms_send, the next check's time was an indexed column of a row with fourteen indexes: the
// poller's lease and its result were two updates of the wide row, each writing an entry in every
// index. In delivery_due a due check is a two-column row: the lease updates it, and the result only
// touches the message's unindexed delivery columns, an update PostgreSQL can make without index
// entries (HOT).
// A row exists while its message's delivery status is still being asked about; it goes when the
// status is final.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE IF NOT EXISTS delivery_due (
      message_id BIGINT PRIMARY KEY REFERENCES user_sms_send (id) ON DELETE CASCADE,
      due_at     TIMESTAMPTZ NOT NULL
    )`.execute(db);
  await sql`CREATE INDEX IF NOT EXISTS idx_delivery_due_at ON delivery_due (due_at)`.execute(db);
  await sql`
    INSERT INTO delivery_due (message_id, due_at)
    SELECT id, delivery_next_check_at FROM user_sms_send WHERE delivery_next_check_at IS NOT NULL
    ON CONFLICT (message_id) DO NOTHING`.execute(db);
  await sql`DROP INDEX IF EXISTS idx_user_sms_delivery_due`.execute(db);
  await sql`ALTER TABLE user_sms_send DROP COLUMN IF EXISTS delivery_next_check_at`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE user_sms_send ADD COLUMN IF NOT EXISTS delivery_next_check_at TIMESTAMPTZ`.execute(db);
  await sql`UPDATE user_sms_send u SET delivery_next_check_at = c.due_at FROM delivery_due c WHERE c.message_id = u.id`.execute(db);
  await sql`
    CREATE INDEX IF NOT EXISTS idx_user_sms_delivery_due ON user_sms_send (delivery_next_check_at)
    WHERE delivery_next_check_at IS NOT NULL`.execute(db);
  await sql`DROP TABLE IF EXISTS delivery_due`.execute(db);
}
