import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { createDb, type Db } from '../../src/db/database.ts';
import { insertPendingMessage } from '../../src/messages/repository.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';

// A message's row is stored only if PostgreSQL receives its insert in time (src/messages/admission.ts,
// "the deadline"). An insert that arrives late, as one held up in the network would after the API had
// given up and answered 503 "nothing was sent", must store nothing: otherwise the sweeper would send
// the message and the caller's retry would send it a second time.
//
// "Late" is made here with PostgreSQL itself: a transaction holds user_sms_send locked against writes
// (reads go on), so the API's insert waits before PostgreSQL evaluates it, until its deadline has
// passed by PostgreSQL's clock.

const PHONE = '+375296254070';
const ADMISSION_WINDOW_MS = 500;

describe.each<{ name: string; settings: Record<string, string> }>([
  { name: 'no daily cap', settings: {} },
  { name: 'a daily cap (admission in a transaction)', settings: { DAILY_CAP_PER_ENTERPRISE: '100' } },
])('admission deadline, $name', ({ settings }) => {
  let env: TestEnv;
  let baseUrl: string;
  let serial = 0;

  beforeAll(async () => {
    env = await createTestEnv({ RATE_LIMIT_PER_WINDOW: '1000', ...settings });
    await env.seedEnterprise({ number: '0367', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    const { api } = await env.startService({ workers: 1 });
    baseUrl = api!.url;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  const send = (text: string, headers: Record<string, string> = {}) => postJson(baseUrl, '/send', { enterprise_number: '0367', phone: PHONE, text }, headers);
  const rowsWithText = (text: string) => env.db.selectFrom('user_sms_send').select(['id', 'status']).where('text', '=', text).execute();
  const sendsOf = (text: string) => env.sandbox.calls().filter((c) => c.endpoint === 'send/sms' && c.text === text);

  /** Runs `request` while user_sms_send is locked against writes, and unlocks it once its insert is past its deadline. */
  async function lateByLock<T>(request: () => Promise<T>): Promise<T> {
    const locker = new pg.Client({ connectionString: env.databaseUrl });
    await locker.connect();
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE user_sms_send IN SHARE MODE');
      const answer = request();
      // The insert was sent (its deadline's start) before it waits here.
      await eventually(async () => {
        const waiting = await sql<{ n: number }>`
          SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock' AND query ILIKE '%insert into "user_sms_send"%'`.execute(env.db);
        return waiting.rows[0]!.n > 0 ? true : undefined;
      });
      const { rows } = await locker.query<{ past: string }>(`SELECT (clock_timestamp() + make_interval(secs => $1::float8 / 1000))::text AS past`, [ADMISSION_WINDOW_MS + 1]);
      await eventually(async () => ((await locker.query<{ late: boolean }>('SELECT clock_timestamp() > $1::timestamptz AS late', [rows[0]!.past])).rows[0]!.late ? true : undefined));
      await locker.query('COMMIT');
      return await answer;
    } finally {
      await locker.end();
    }
  }

  it('a send whose insert reaches PostgreSQL after its deadline answers 503 "nothing was sent", and stores and sends nothing', async () => {
    const text = `late ${++serial} ${Date.now()}`;
    const answer = await lateByLock(() => send(text));
    expect(answer.status, answer.text).toBe(503);
    expect(String(answer.json.error)).toMatch(/nothing was sent, retry later/);
    expect(answer.headers.get('retry-after')).toBe('5');
    expect(await rowsWithText(text)).toEqual([]);

    // The caller's retry, now in time, sends it once.
    const retry = await send(text);
    expect(retry.status, retry.text).toBe(200);
    expect(retry.json.success).toBe(true);
    expect(await rowsWithText(text)).toHaveLength(1);
    expect(sendsOf(text)).toHaveLength(1);
  });

  it('under an Idempotency-Key, a late insert stores nothing and leaves the key free for the retry', async () => {
    const text = `late keyed ${++serial} ${Date.now()}`;
    const key = { 'idempotency-key': `late-${serial}-${Date.now()}` };
    const answer = await lateByLock(() => send(text, key));
    expect(answer.status, answer.text).toBe(503);
    expect(await rowsWithText(text)).toEqual([]);

    const retry = await send(text, key);
    expect(retry.status, retry.text).toBe(200);
    expect(retry.headers.get('idempotent-replayed')).toBeNull();
    expect(await rowsWithText(text)).toHaveLength(1);
    expect(sendsOf(text)).toHaveLength(1);
  });
});

describe('a transaction whose next statement does not arrive in time', () => {
  let env: TestEnv;
  let db: Db;

  beforeAll(async () => {
    env = await createTestEnv();
    // statement_timeout 300 ms: the session is ended after 300 ms idle in a transaction.
    db = createDb(env.databaseUrl, { statementTimeoutMs: 300, max: 1 });
  });
  afterAll(async () => {
    await db?.destroy();
    await env?.cleanup();
  });

  it('is rolled back with its session, so a COMMIT held up past the API giving up can never commit', async () => {
    const text = `idle in transaction ${Date.now()}`;
    const outcome = db.transaction().execute(async (trx) => {
      const pid = (await sql<{ pid: number }>`SELECT pg_backend_pid() AS pid`.execute(trx)).rows[0]!.pid;
      await insertPendingMessage(trx, { enterpriseNumber: '0367', enterpriseName: null, phone: PHONE, text, sender: null, customId: null, serviceName: null, requestIp: null, userAgent: null });
      // Idle in the transaction until PostgreSQL has ended the session; then the COMMIT is sent.
      await eventually(async () => {
        const alive = await sql<{ n: number }>`SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ${pid}`.execute(env.db);
        return alive.rows[0]!.n === 0 ? true : undefined;
      });
    });
    // The COMMIT fails because the session is gone (not because the wait above gave up).
    await expect(outcome).rejects.toThrow(/idle-in-transaction|Connection terminated|terminating connection|connection error/i);
    expect(await env.db.selectFrom('user_sms_send').select('id').where('text', '=', text).execute()).toEqual([]);
  });
});
