import { sql, type Kysely } from 'kysely';

// Callbacks (src/callbacks): the caller's callback_url on its message, and the events owed to it.
// Frozen once landed; never imports application code.
//
// An event is a row before it is a queue job, so a Redis that loses its jobs loses no event: the
// callback sweeper queues again every pending event whose job is gone. One message's events go out in
// id order; `revision` (the message's send attempts plus operator actions when the event was raised)
// makes a re-run of the same outcome raise nothing new, while a later, real change of the same kind
// (a message retried by an operator that fails again) is a new event.

export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`ALTER TABLE user_sms_send ADD COLUMN IF NOT EXISTS callback_url VARCHAR(2048)`.execute(db);

  await sql`
    CREATE TABLE IF NOT EXISTS callback_events (
      id              BIGSERIAL PRIMARY KEY,
      message_id      BIGINT NOT NULL REFERENCES user_sms_send (id) ON DELETE CASCADE,
      type            VARCHAR(32) NOT NULL,
      revision        INTEGER NOT NULL,
      webhook_id      VARCHAR(64) NOT NULL UNIQUE,
      url             VARCHAR(2048) NOT NULL,
      body            TEXT NOT NULL,
      status          VARCHAR(16) NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'given_up')),
      attempts        INTEGER NOT NULL DEFAULT 0,
      created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
      window_start_at TIMESTAMPTZ NOT NULL DEFAULT now(),
      next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now(),
      last_attempt_at TIMESTAMPTZ,
      last_error      TEXT,
      last_http_status SMALLINT,
      finished_at     TIMESTAMPTZ,
      UNIQUE (message_id, type, revision)
    )`.execute(db);
  // Order within a message, and the "is an earlier event still pending" check.
  await sql`CREATE INDEX IF NOT EXISTS idx_callback_events_pending ON callback_events (message_id, id) WHERE status = 'pending'`.execute(db);
  // The sweeper's scan and the operators' list of given-up events: small parts of the table.
  await sql`CREATE INDEX IF NOT EXISTS idx_callback_events_due ON callback_events (next_attempt_at) WHERE status = 'pending'`.execute(db);
  await sql`CREATE INDEX IF NOT EXISTS idx_callback_events_given_up ON callback_events (finished_at) WHERE status = 'given_up'`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE IF EXISTS callback_events`.execute(db);
  await sql`ALTER TABLE user_sms_send DROP COLUMN IF EXISTS callback_url`.execute(db);
}
