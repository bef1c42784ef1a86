import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { createDb, type Db } from '../../src/db/database.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';
import * as deliveryDue from '../../migrations/2026-12-02T05-00_delivery-due.ts';
import * as webhookIdUnindexed from '../../migrations/2026-12-03T00-00_callback-webhook-id-unindexed.ts';
import * as sendFillfactor from '../../migrations/2026-12-03T01-00_user-sms-send-fillfactor.ts';
import * as callbackOwedWhen from '../../migrations/2026-12-04T00-00_callback-owed-when.ts';

// Migrations meet databases the old service has used for years: they must keep its table, rows
// and indexes exactly, and be safe to run twice and from several processes at once.

const OLD_DDL = `
CREATE TABLE user_sms_send (
    id BIGSERIAL PRIMARY KEY, enterprise_number VARCHAR(10) NOT NULL, enterprise_name VARCHAR(255) DEFAULT NULL,
    phone VARCHAR(20) NOT NULL, text TEXT NOT NULL, sender VARCHAR(11) DEFAULT NULL, message_id BIGINT DEFAULT NULL,
    custom_id VARCHAR(20) DEFAULT NULL, status VARCHAR(10) NOT NULL, price DECIMAL(10,6) DEFAULT NULL,
    parts SMALLINT DEFAULT NULL, amount DECIMAL(10,6) DEFAULT NULL, error_message TEXT DEFAULT NULL,
    service_name VARCHAR(50) DEFAULT NULL, request_ip INET DEFAULT NULL, user_agent VARCHAR(255) DEFAULT NULL,
    response_data JSONB DEFAULT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, sent_at TIMESTAMP DEFAULT NULL);
CREATE INDEX idx_user_sms_enterprise_number ON user_sms_send(enterprise_number);
CREATE TABLE enterprises (id SERIAL PRIMARY KEY, number VARCHAR(10) UNIQUE NOT NULL, name VARCHAR(255),
    custom_domain TEXT, active BOOLEAN, secret TEXT);`;

const DOCUMENTED_COLUMNS: Record<string, string> = {
  id: 'bigint',
  enterprise_number: 'character varying(10)',
  enterprise_name: 'character varying(255)',
  phone: 'character varying(20)',
  text: 'text',
  sender: 'character varying(11)',
  message_id: 'bigint',
  custom_id: 'character varying(20)',
  status: 'character varying(10)',
  price: 'numeric(10,6)',
  parts: 'smallint',
  amount: 'numeric(10,6)',
  error_message: 'text',
  service_name: 'character varying(50)',
  request_ip: 'inet',
  user_agent: 'character varying(255)',
  response_data: 'jsonb',
  created_at: 'timestamp without time zone',
  sent_at: 'timestamp without time zone',
};

const DOCUMENTED_INDEXES = ['enterprise_number', 'phone', 'created_at', 'message_id', 'custom_id', 'status', 'service_name', 'sent_at'].map(
  (c) => `idx_user_sms_${c}`,
);

const databases: string[] = [];
const serverUrl = inject('serverDatabaseUrl');

async function emptyDatabase(): Promise<string> {
  const name = `sms_test_${inject('runId')}_m${randomBytes(3).toString('hex')}`;
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  databases.push(name);
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function columnTypes(db: Db): Promise<Record<string, string>> {
  const { rows } = await sql<{ column_name: string; type: string }>`
    SELECT a.attname AS column_name, format_type(a.atttypid, a.atttypmod) AS type
    FROM pg_attribute a WHERE a.attrelid = 'user_sms_send'::regclass AND a.attnum > 0 AND NOT a.attisdropped`.execute(db);
  return Object.fromEntries(rows.map((r) => [r.column_name, r.type]));
}

async function indexNames(db: Db): Promise<string[]> {
  const { rows } = await sql<{ indexname: string }>`SELECT indexname FROM pg_indexes WHERE tablename = 'user_sms_send'`.execute(db);
  return rows.map((r) => r.indexname);
}

afterAll(async () => {
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  for (const name of databases) await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.end();
});

describe('migrations', () => {
  it('create both tables, the documented columns with their exact types, and all eight documented indexes on an empty database', async () => {
    const db = createDb(await emptyDatabase(), { max: 1 });
    try {
      await migrateToLatest(db);
      expect(await columnTypes(db)).toMatchObject(DOCUMENTED_COLUMNS);
      expect(await indexNames(db)).toEqual(expect.arrayContaining(DOCUMENTED_INDEXES));
      const enterprises = await sql<{ n: string }>`SELECT count(*) AS n FROM enterprises`.execute(db);
      expect(enterprises.rows[0]?.n).toBe('0');
    } finally {
      await db.destroy();
    }
  });

  it("keep the old service's table, rows and enterprises table untouched, adding only new columns", async () => {
    const url = await emptyDatabase();
    const db = createDb(url, { max: 1 });
    try {
      await sql.raw(OLD_DDL).execute(db);
      await sql`INSERT INTO enterprises (number, name, custom_domain, active, secret) VALUES ('0367', 'june', 'u k', true, 's')`.execute(db);
      await sql`INSERT INTO user_sms_send (enterprise_number, phone, text, status, amount) VALUES ('0367', '+375296254070', 'old', 'success', 0.014732)`.execute(db);
      await migrateToLatest(db);
      expect(await columnTypes(db)).toMatchObject(DOCUMENTED_COLUMNS);
      expect(await indexNames(db)).toEqual(expect.arrayContaining(DOCUMENTED_INDEXES));
      const old = await sql<{ text: string; status: string; attempts: number }>`SELECT text, status, attempts FROM user_sms_send`.execute(db);
      expect(old.rows).toEqual([{ text: 'old', status: 'success', attempts: 0 }]);
      const enterprise = await sql<{ secret: string }>`SELECT secret FROM enterprises WHERE number = '0367'`.execute(db);
      expect(enterprise.rows[0]?.secret).toBe('s');
    } finally {
      await db.destroy();
    }
  });

  it('are safe to run twice and from several processes at once', async () => {
    const url = await emptyDatabase();
    const pools = [1, 2, 3].map(() => createDb(url, { max: 1 }));
    try {
      const results = await Promise.all(pools.map((db) => migrateToLatest(db)));
      // Exactly one run applied each migration; the others found nothing to do.
      const applied = results.flat().map((r) => r.migrationName);
      expect(new Set(applied).size).toBe(applied.length);
      expect(applied.length).toBeGreaterThan(0);
      expect(await migrateToLatest(pools[0]!)).toEqual([]);
    } finally {
      await Promise.all(pools.map((db) => db.destroy()));
    }
  });

  it('move the delivery checks still due out of user_sms_send into delivery_due, each with its time, and back', async () => {
    const db = createDb(await emptyDatabase(), { max: 1 });
    try {
      await migrateToLatest(db);
      // A migration sees the database untyped.
      const untyped = db as unknown as Kysely<unknown>;
      // As the table was before delivery_due: the next check's time on the message.
      await deliveryDue.down(untyped);
      const inserted = await sql<{ id: string }>`
        INSERT INTO user_sms_send (enterprise_number, phone, text, status, delivery_status, delivery_next_check_at)
        VALUES ('0367', '+375296254070', 'due', 'success', 'pending', '2030-01-01T00:00:00Z'),
               ('0367', '+375296254070', 'final', 'success', 'delivered', NULL)
        RETURNING id`.execute(db);
      const [due] = inserted.rows.map((r) => r.id);

      await deliveryDue.up(untyped);
      const moved = await sql<{ message_id: string; due_at: Date }>`SELECT message_id, due_at FROM delivery_due`.execute(db);
      expect(moved.rows).toEqual([{ message_id: due, due_at: new Date('2030-01-01T00:00:00Z') }]);
      expect(await columnTypes(db)).not.toHaveProperty('delivery_next_check_at');
      expect(await indexNames(db)).not.toContain('idx_user_sms_delivery_due');

      await deliveryDue.down(untyped);
      const back = await sql<{ id: string; delivery_next_check_at: Date | null }>`SELECT id, delivery_next_check_at FROM user_sms_send ORDER BY id`.execute(db);
      expect(back.rows.map((r) => r.delivery_next_check_at)).toEqual([new Date('2030-01-01T00:00:00Z'), null]);
      await deliveryDue.up(untyped);
    } finally {
      await db.destroy();
    }
  });

  it('leave callback_events.webhook_id without an index, and put its unique index back on the way down', async () => {
    const db = createDb(await emptyDatabase(), { max: 1 });
    const eventIndexes = async () =>
      (await sql<{ indexdef: string }>`SELECT indexdef FROM pg_indexes WHERE tablename = 'callback_events'`.execute(db)).rows.map((r) => r.indexdef);
    try {
      await migrateToLatest(db);
      expect((await eventIndexes()).filter((def) => def.includes('webhook_id'))).toEqual([]);
      // The indexes the dispatchers and the raisers use are all still there.
      expect(await eventIndexes()).toHaveLength(5);

      await webhookIdUnindexed.down(db as unknown as Kysely<unknown>);
      expect((await eventIndexes()).filter((def) => def.includes('UNIQUE') && def.includes('(webhook_id)'))).toHaveLength(1);
      await webhookIdUnindexed.up(db as unknown as Kysely<unknown>);
      expect((await eventIndexes()).filter((def) => def.includes('webhook_id'))).toEqual([]);
    } finally {
      await db.destroy();
    }
  });

  it("leave a fifth of user_sms_send's new pages free for its rows' later versions, a storage setting only, taken back on the way down", async () => {
    const db = createDb(await emptyDatabase(), { max: 1 });
    const options = async () =>
      (await sql<{ reloptions: string[] | null }>`SELECT reloptions FROM pg_class WHERE oid = 'user_sms_send'::regclass`.execute(db)).rows[0]?.reloptions ?? [];
    try {
      await migrateToLatest(db);
      expect(await options()).toEqual(['fillfactor=80']);
      // A page filled as full as it is allowed to be still takes several of its rows' delivery statuses
      // beside them (HOT updates: the new version stays on the page, with no index entry); packed
      // full, none: every new version goes to another page.
      const hotUpdatesOnFirstPage = async () => {
        await sql`TRUNCATE user_sms_send CASCADE`.execute(db);
        await sql`
          INSERT INTO user_sms_send (enterprise_number, phone, text, status, provider_ref)
          SELECT '0367', '+375290000001', repeat('x', 120), 'success', 'hot' || n FROM generate_series(1, 400) n`.execute(db);
        const onFirstPage = sql`(ctid::text::point)[0] = 0`;
        return db.transaction().execute(async (trx) => {
          await sql`UPDATE user_sms_send SET delivery_status = 'delivered', delivery_code = 3, delivered_at = now() WHERE ${onFirstPage}`.execute(trx);
          const { rows } = await sql<{ stayed: string }>`SELECT count(*) AS stayed FROM user_sms_send WHERE ${onFirstPage}`.execute(trx);
          return Number(rows[0]?.stayed ?? 0);
        });
      };
      expect(await hotUpdatesOnFirstPage()).toBeGreaterThanOrEqual(4);

      await sendFillfactor.down(db as unknown as Kysely<unknown>);
      expect(await options()).toEqual([]);
      expect(await hotUpdatesOnFirstPage()).toBe(0);
      await sendFillfactor.up(db as unknown as Kysely<unknown>);
      expect(await options()).toEqual(['fillfactor=80']);
    } finally {
      await db.destroy();
    }
  });

  it('fire the callback_owed trigger only when a final send or delivery status is newly set, and only for a callback_url, as before on the way down', async () => {
    const db = createDb(await emptyDatabase(), { max: 1 });
    // The trigger's WHEN clause as PostgreSQL prints it back, without its parentheses and casts.
    const when = async () =>
      (
        await sql<{ def: string }>`
          SELECT pg_get_triggerdef(oid) AS def FROM pg_trigger WHERE tgrelid = 'user_sms_send'::regclass AND tgname = 'user_sms_callback_owed'`.execute(db)
      ).rows.map((r) =>
        (/ WHEN (.*) EXECUTE FUNCTION user_sms_callback_owed\(\)$/.exec(r.def)?.[1] ?? r.def).replace(/::(text|character varying)(\[\])?/g, '').replace(/[()]/g, ''),
      );
    const narrowed =
      "new.callback_url IS NOT NULL AND new.status IS DISTINCT FROM old.status AND new.status = ANY ARRAY['success', 'failed', 'unknown']" +
      " OR new.delivery_status IS DISTINCT FROM old.delivery_status AND new.delivery_status = ANY ARRAY['delivered', 'undelivered', 'unknown']";
    try {
      await migrateToLatest(db);
      expect(await when()).toEqual([narrowed]);

      await callbackOwedWhen.down(db as unknown as Kysely<unknown>);
      expect(await when()).toEqual(['new.callback_url IS NOT NULL']);
      await callbackOwedWhen.up(db as unknown as Kysely<unknown>);
      expect(await when()).toEqual([narrowed]);
    } finally {
      await db.destroy();
    }
  });
});
