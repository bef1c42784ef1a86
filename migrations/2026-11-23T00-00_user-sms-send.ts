import { sql, type Kysely } from 'kysely';

// Frozen once landed; never imports application code.
//
// `user_sms_send` may already exist, created by the service this one replaces, with years of rows:
// every statement is IF NOT EXISTS, the documented columns keep their exact types, and this
// service's own columns are added beside them, nullable or with defaults.

export async function up(db: Kysely<unknown>): Promise<void> {
  // Owned by the wider system; created only for standalone installs.
  await sql`
    CREATE TABLE IF NOT EXISTS enterprises (
      number        VARCHAR(10) PRIMARY KEY,
      name          VARCHAR(255),
      custom_domain TEXT,
      active        BOOLEAN DEFAULT TRUE
    )`.execute(db);

  await sql`
    CREATE TABLE IF NOT EXISTS user_sms_send (
      id                BIGSERIAL PRIMARY KEY,
      enterprise_number VARCHAR(10) NOT NULL,
      enterprise_name   VARCHAR(255) DEFAULT NULL,
      phone             VARCHAR(20) NOT NULL,
      text              TEXT NOT NULL,
      sender            VARCHAR(11) DEFAULT NULL,
      message_id        BIGINT DEFAULT NULL,
      custom_id         VARCHAR(20) DEFAULT NULL,
      status            VARCHAR(10) NOT NULL,
      price             DECIMAL(10,6) DEFAULT NULL,
      parts             SMALLINT DEFAULT NULL,
      amount            DECIMAL(10,6) DEFAULT NULL,
      error_message     TEXT DEFAULT NULL,
      service_name      VARCHAR(50) DEFAULT NULL,
      request_ip        INET DEFAULT NULL,
      user_agent        VARCHAR(255) DEFAULT NULL,
      response_data     JSONB DEFAULT NULL,
      created_at        TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
      sent_at           TIMESTAMP DEFAULT NULL
    )`.execute(db);

  // The state machine and delivery bookkeeping.
  await sql`
    ALTER TABLE user_sms_send
      ADD COLUMN IF NOT EXISTS provider_ref    VARCHAR(20),
      ADD COLUMN IF NOT EXISTS attempts        SMALLINT NOT NULL DEFAULT 0,
      ADD COLUMN IF NOT EXISTS error_code      VARCHAR(32),
      ADD COLUMN IF NOT EXISTS not_before      TIMESTAMPTZ,
      ADD COLUMN IF NOT EXISTS claimed_at      TIMESTAMPTZ,
      ADD COLUMN IF NOT EXISTS updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
      ADD COLUMN IF NOT EXISTS idempotency_key VARCHAR(255),
      ADD COLUMN IF NOT EXISTS request_hash    CHAR(64)`.execute(db);

  const documentedIndexes: Array<[string, string]> = [
    ['idx_user_sms_enterprise_number', 'enterprise_number'],
    ['idx_user_sms_phone', 'phone'],
    ['idx_user_sms_created_at', 'created_at'],
    ['idx_user_sms_message_id', 'message_id'],
    ['idx_user_sms_custom_id', 'custom_id'],
    ['idx_user_sms_status', 'status'],
    ['idx_user_sms_service_name', 'service_name'],
    ['idx_user_sms_sent_at', 'sent_at'],
  ];
  for (const [name, column] of documentedIndexes) {
    await sql`CREATE INDEX IF NOT EXISTS ${sql.id(name)} ON user_sms_send (${sql.id(column)})`.execute(db);
  }

  // Our reference is what makes an unknown outcome checkable: two messages must never share one.
  await sql`
    CREATE UNIQUE INDEX IF NOT EXISTS idx_user_sms_provider_ref
      ON user_sms_send (provider_ref) WHERE provider_ref IS NOT NULL`.execute(db);
  // Idempotency is a database guarantee, not a cache entry that might expire early.
  await sql`
    CREATE UNIQUE INDEX IF NOT EXISTS idx_user_sms_idempotency
      ON user_sms_send (enterprise_number, idempotency_key) WHERE idempotency_key IS NOT NULL`.execute(db);
  // The sweeper's scan: only unfinished rows, a tiny part of the table.
  await sql`
    CREATE INDEX IF NOT EXISTS idx_user_sms_unfinished
      ON user_sms_send (updated_at) WHERE status IN ('pending', 'queued', 'sending')`.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  // Only what this service added; the documented table and its rows are never dropped.
  await sql`DROP INDEX IF EXISTS idx_user_sms_unfinished`.execute(db);
  await sql`DROP INDEX IF EXISTS idx_user_sms_idempotency`.execute(db);
  await sql`DROP INDEX IF EXISTS idx_user_sms_provider_ref`.execute(db);
  await sql`
    ALTER TABLE user_sms_send
      DROP COLUMN IF EXISTS provider_ref, DROP COLUMN IF EXISTS attempts, DROP COLUMN IF EXISTS error_code,
      DROP COLUMN IF EXISTS not_before, DROP COLUMN IF EXISTS claimed_at, DROP COLUMN IF EXISTS updated_at,
      DROP COLUMN IF EXISTS idempotency_key, DROP COLUMN IF EXISTS request_hash`.execute(db);
}
