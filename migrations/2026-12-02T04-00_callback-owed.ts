import { sql, type Kysely } from 'kysely';

// Events owed to callers (src/callbacks), written by the same statement that changes the message.
// Frozen once landed; never imports application code.
//
// A worker records a message's final status, then raises its event: two statements, and a worker that
// dies or loses PostgreSQL between them (on the job's last attempt, or in the delivery poller, which
// never looks at a final row again) would owe the caller an event nobody remembers. So the row's
// change itself leaves a marker, in its own transaction, whoever makes it (send worker, delivery
// poller, a cancel, an operator's drop, the sweeper): callback_owed. Raising the event removes the
// marker; the callback sweeper raises what is still owed after a grace period.
//
// Only messages with a callback_url leave markers (the trigger's WHEN clause): the old service's rows
// and every send without a callback cost nothing. Type names are those of the events
// (src/callbacks/emit-message-event.ts); revision as there: send attempts plus operator actions.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE IF NOT EXISTS callback_owed (
      message_id BIGINT NOT NULL REFERENCES user_sms_send (id) ON DELETE CASCADE,
      type       VARCHAR(32) NOT NULL,
      revision   INTEGER NOT NULL,
      created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
      PRIMARY KEY (message_id, type, revision)
    )`.execute(db);
  await sql`CREATE INDEX IF NOT EXISTS idx_callback_owed_created ON callback_owed (created_at)`.execute(db);

  await sql`
    CREATE OR REPLACE FUNCTION user_sms_callback_owed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
      rev INTEGER := NEW.attempts + jsonb_array_length(coalesce(NEW.operator_actions, '[]'::jsonb));
    BEGIN
      IF NEW.status IS DISTINCT FROM OLD.status AND NEW.status IN ('success', 'failed', 'unknown') THEN
        INSERT INTO callback_owed (message_id, type, revision)
        VALUES (NEW.id, CASE NEW.status WHEN 'success' THEN 'message.sent' WHEN 'failed' THEN 'message.failed' ELSE 'message.unknown' END, rev)
        ON CONFLICT DO NOTHING;
      END IF;
      IF NEW.delivery_status IS DISTINCT FROM OLD.delivery_status AND NEW.delivery_status IN ('delivered', 'undelivered', 'unknown') THEN
        INSERT INTO callback_owed (message_id, type, revision)
        VALUES (NEW.id, CASE NEW.delivery_status WHEN 'delivered' THEN 'message.delivered' WHEN 'undelivered' THEN 'message.undelivered' ELSE 'message.unknown' END, rev)
        ON CONFLICT DO NOTHING;
      END IF;
      RETURN NULL;
    END $$`.execute(db);
  await sql`DROP TRIGGER IF EXISTS user_sms_callback_owed ON user_sms_send`.execute(db);
  await sql`
    CREATE TRIGGER user_sms_callback_owed AFTER UPDATE ON user_sms_send
    FOR EACH ROW WHEN (NEW.callback_url IS NOT NULL)
    EXECUTE FUNCTION user_sms_callback_owed()`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER IF EXISTS user_sms_callback_owed ON user_sms_send`.execute(db);
  await sql`DROP FUNCTION IF EXISTS user_sms_callback_owed()`.execute(db);
  await sql`DROP TABLE IF EXISTS callback_owed`.execute(db);
}
