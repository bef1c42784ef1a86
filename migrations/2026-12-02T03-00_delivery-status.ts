import { sql, type Kysely } from 'kysely';

// Whether each SMS reached the phone, as WebSMS's status/sms tells it (src/delivery/). Rows sent
// before this column, and messages WebSMS never accepted, keep NULL: nobody asked about them.
// - delivery_status: pending | delivered | undelivered | unknown
// - delivery_code: WebSMS's last status code (0 queued, 1 accepted by operator, 2 rejected,
//   3 delivered, 4 not delivered, 5 being delivered)
// - delivered_at: when we learned the final status
// - delivery_checks: look-ups made so far
// - delivery_next_check_at: when the next look-up is due; NULL once the status is final. This is the
//   poller's queue: a partial index keeps it small (only messages still being asked about), and a
//   Redis that loses its data loses nothing of it.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    ALTER TABLE user_sms_send
      ADD COLUMN IF NOT EXISTS delivery_status VARCHAR(12),
      ADD COLUMN IF NOT EXISTS delivery_code SMALLINT,
      ADD COLUMN IF NOT EXISTS delivered_at TIMESTAMPTZ,
      ADD COLUMN IF NOT EXISTS delivery_checks SMALLINT NOT NULL DEFAULT 0,
      ADD COLUMN IF NOT EXISTS delivery_next_check_at TIMESTAMPTZ`.execute(db);
  await sql`
    CREATE INDEX IF NOT EXISTS idx_user_sms_delivery_due ON user_sms_send (delivery_next_check_at)
    WHERE delivery_next_check_at IS NOT NULL`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP INDEX IF EXISTS idx_user_sms_delivery_due`.execute(db);
  await sql`
    ALTER TABLE user_sms_send
      DROP COLUMN IF EXISTS delivery_next_check_at,
      DROP COLUMN IF EXISTS delivery_checks,
      DROP COLUMN IF EXISTS delivered_at,
      DROP COLUMN IF EXISTS delivery_code,
      DROP COLUMN IF EXISTS delivery_status`.execute(db);
}
