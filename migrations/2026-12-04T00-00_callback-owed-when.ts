import { sql, type Kysely } from 'kysely';

// The callback_owed trigger (2026-12-02T04-00_callback-owed) fires only for the changes that owe an
// event. Frozen once landed; never imports application code.
//
// Its WHEN clause was only NEW.callback_url IS NOT NULL: every update of such a row ran the function,
// a worker's claim and each delivery look-up still pending included, though the function then
// inserted nothing. An AFTER ROW trigger whose WHEN holds also queues an after-trigger event and
// fetches the row's old and new versions again at the end of the statement, so these updates paid
// for it for nothing. The WHEN clause now holds exactly when one of the function's two inserts runs:
// a final send status, or a final delivery status, newly set. The function is unchanged: its checks
// still decide which of the two inserts run.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER IF EXISTS user_sms_callback_owed ON user_sms_send`.execute(db);
  await sql`
    CREATE TRIGGER user_sms_callback_owed AFTER UPDATE ON user_sms_send
    FOR EACH ROW WHEN (
      NEW.callback_url IS NOT NULL AND (
        (NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('success', 'failed', 'unknown'))
        OR (NEW.delivery_status IS DISTINCT FROM OLD.delivery_status AND NEW.delivery_status IN ('delivered', 'undelivered', 'unknown'))
      )
    )
    EXECUTE FUNCTION user_sms_callback_owed()`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER IF EXISTS user_sms_callback_owed ON user_sms_send`.execute(db);
  await sql`
    CREATE TRIGGER user_sms_callback_owed AFTER UPDATE ON user_sms_send
    FOR EACH ROW WHEN (NEW.callback_url IS NOT NULL)
    EXECUTE FUNCTION user_sms_callback_owed()`.execute(db);
}
