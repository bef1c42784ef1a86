import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findOwed } from '../../src/callbacks/callback-repository.ts';
import { claimDueChecks } from '../../src/delivery/delivery-repository.ts';
import { sandboxTriggers } from '../../src/websms/sandbox.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';
import { runCli } from '../support/cli.ts';
import { parsePrometheusText, sampleValue } from '../support/prometheus-text.ts';

// Delivery status, polled from WebSMS (the sandbox, which plays queued → accepted by operator → final
// over DELIVERY_MS) on a compressed schedule, through the real API, worker, PostgreSQL and Redis.

// Far apart, so that a loaded machine's late check still sees what the schedule means it to see.
const SCHEDULE_MS = [300, 1_500, 2_500];
const DELIVERY_MS = 1_000;
const PHONE = '+375296254070';
const OTHER = { user: 'other@example.by', apiKey: 'other-Key-0368-xyz' };

let env: TestEnv;
let baseUrl: string;

beforeAll(async () => {
  env = await createTestEnv(
    {
      RATE_LIMIT_PER_WINDOW: '1000',
      DELIVERY_POLL_SCHEDULE_MS: SCHEDULE_MS.join(','),
      DELIVERY_POLL_INTERVAL_MS: '100',
      DELIVERY_POLL_BACKOFF_MS: '1500',
    },
    { sandbox: { deliveryMs: DELIVERY_MS } },
  );
  env.sandbox.addAccount(OTHER);
  await env.seedEnterprise({ number: '0367', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  await env.seedEnterprise({ number: '0368', customDomain: `${OTHER.user} ${OTHER.apiKey}` });
  baseUrl = (await env.startService({ workers: 1 })).api!.url;
});

afterAll(async () => {
  await env?.cleanup();
});

type Json = Record<string, unknown>;

async function send(phone: string, enterprise = '0367'): Promise<Json> {
  const { status, json } = await postJson(baseUrl, '/send', { enterprise_number: enterprise, phone, text: `delivery ${Math.random()}` });
  expect(status).toBe(200);
  return json;
}

const row = (id: unknown) =>
  env.db
    .selectFrom('user_sms_send')
    .select(['status', 'message_id', 'sent_at', 'delivery_status', 'delivery_code', 'delivered_at', 'delivery_checks'])
    .select((eb) => eb.selectFrom('delivery_due').select('due_at').whereRef('delivery_due.message_id', '=', 'user_sms_send.id').as('delivery_next_check_at'))
    .where('id', '=', String(id))
    .executeTakeFirstOrThrow();

const lookupsOf = (messageId: unknown) => env.sandbox.calls().filter((c) => c.endpoint === 'status/sms' && c.messageId === messageId);

async function finalRow(id: unknown) {
  return eventually(async () => {
    const r = await row(id);
    return r.delivery_status !== 'pending' ? r : undefined;
  }, 15_000);
}

describe('delivery status', () => {
  it('is pending once WebSMS accepted the message, then asked on its schedule until delivered; GET /messages/{id} shows it', async () => {
    const sent = await send(PHONE);
    // When WebSMS accepted it: the schedule counts from the send (it is recorded just after).
    const acceptedAt = env.sandbox.acceptedSends().find((c) => c.messageId === sent.message_id)!.at;
    expect(await row(sent.id)).toMatchObject({ status: 'success', delivery_status: 'pending' });

    const done = await finalRow(sent.id);
    expect(done).toMatchObject({ delivery_status: 'delivered', delivery_code: 3, delivery_next_check_at: null });
    expect(done.delivered_at).toBeInstanceOf(Date);
    // The sandbox says "delivered" DELIVERY_MS after acceptance: the check at 300 ms saw it pending, the one at 1.5 s final.
    const lookups = lookupsOf(sent.message_id);
    expect(lookups).toHaveLength(2);
    expect(done.delivery_checks).toBe(2);
    lookups.forEach((call, k) => expect(call.at - acceptedAt, `check ${k}`).toBeGreaterThanOrEqual(SCHEDULE_MS[k]!));

    const answer = (await (await fetch(`${baseUrl}${String(sent.status_url)}`, { headers: { 'x-forwarded-for': '203.0.113.1' } })).json()) as Json;
    expect(answer).toMatchObject({ id: sent.id, status: 'success', delivery_status: 'delivered' });
    expect(Date.parse(answer.delivered_at as string)).toBe(done.delivered_at!.getTime());
  });

  it.each([
    ['rejected (2)', sandboxTriggers.deliveryRejected, 2],
    ['not delivered (4)', sandboxTriggers.deliveryFailed, 4],
  ])('ends as undelivered when WebSMS says %s, and asks no more', async (_name, digits, code) => {
    const sent = await send(`+${digits}`);
    const done = await finalRow(sent.id);
    expect(done).toMatchObject({ delivery_status: 'undelivered', delivery_code: code, delivery_next_check_at: null });
    const asked = lookupsOf(sent.message_id).length;
    // No further look-up once final, even after the last scheduled time has passed.
    await eventually(async () => (Date.now() - (await row(sent.id)).delivered_at!.getTime() > SCHEDULE_MS.at(-1)! ? true : undefined), 5_000);
    expect(lookupsOf(sent.message_id)).toHaveLength(asked);
  });

  it('ends as unknown when the status never becomes final, after exactly the scheduled checks', async () => {
    const sent = await send(`+${sandboxTriggers.deliveryNeverFinal}`);
    const done = await finalRow(sent.id);
    expect(done).toMatchObject({ delivery_status: 'unknown', delivery_code: 5, delivered_at: null, delivery_checks: SCHEDULE_MS.length });
    expect(lookupsOf(sent.message_id)).toHaveLength(SCHEDULE_MS.length);
  });

  it('is never asked about a message WebSMS did not accept', async () => {
    const refused = await send(`+${sandboxTriggers.invalidNumber}`);
    expect(refused.success).toBe(false);
    expect(await row(refused.id)).toMatchObject({ status: 'failed', delivery_status: null, delivery_next_check_at: null });
  });

  it("backs off an account that answers error 7, while other accounts' checks go on", async () => {
    env.sandbox.addFault({ kind: 'error7', count: 1, endpoint: 'status/sms', user: DEMO_USER });
    const slowed = await send(PHONE, '0367');
    const other = await send(PHONE, '0368');
    const otherDone = await finalRow(other.id);
    expect(otherDone.delivery_status).toBe('delivered');
    const refusedAt = await eventually(() => env.sandbox.calls().find((c) => c.endpoint === 'status/sms' && c.errorCode === 7 && c.user === DEMO_USER)?.at);
    const done = await finalRow(slowed.id);
    expect(done.delivery_status).toBe('delivered');
    const after = lookupsOf(slowed.message_id).filter((c) => c.at > refusedAt);
    expect(after.length).toBeGreaterThan(0);
    // The backoff (1.5 s) passed before that account was asked again; the refused look-up used no check.
    expect(after[0]!.at - refusedAt).toBeGreaterThanOrEqual(1_450);
    expect(env.sandbox.faultsLeft()).toBe(0);
  });

  it('needs nothing from Redis: a message whose queue data is wiped still gets its delivery status', async () => {
    const sent = await send(PHONE);
    let cursor = '0';
    do {
      const [next, keys] = await env.redis.scan(cursor, 'MATCH', `${env.config.queuePrefix}*`, 'COUNT', 1000);
      cursor = next;
      // The queue's own bookkeeping and the counters stay (the worker is running on them); everything about messages goes.
      const messageKeys = keys.filter((k) => !/:(meta|id|events|stalled-check|marker)$/.test(k) && !k.includes(':metrics:'));
      if (messageKeys.length > 0) await env.redis.del(...messageKeys);
    } while (cursor !== '0');
    expect((await finalRow(sent.id)).delivery_status).toBe('delivered');
  });
});

describe('delivery, as operators see it', () => {
  it('reports each enterprise\'s delivery rate and lists what did not arrive, phones masked over HTTP', async () => {
    const rejected = await send(`+${sandboxTriggers.deliveryRejected}`);
    const delivered = await send(PHONE);
    await finalRow(rejected.id);
    await finalRow(delivered.id);
    const rates = (await (await fetch(`${baseUrl}/reports/delivery?enterprise=0367`)).json()) as { rows: Json[] };
    const counts = await env.db
      .selectFrom('user_sms_send')
      .select(['delivery_status'])
      .where('enterprise_number', '=', '0367')
      .where('delivery_status', 'is not', null)
      .execute();
    const count = (status: string) => counts.filter((r) => r.delivery_status === status).length;
    const final = count('delivered') + count('undelivered') + count('unknown');
    expect(rates.rows).toEqual([
      expect.objectContaining({
        enterprise_number: '0367',
        sent: counts.length,
        delivered: count('delivered'),
        undelivered: count('undelivered'),
        unknown: count('unknown'),
        pending: count('pending'),
        delivery_rate_pct: Math.round((1000 * count('delivered')) / final) / 10,
      }),
    ]);
    const undelivered = (await (await fetch(`${baseUrl}/reports/undelivered`)).json()) as { rows: Json[] };
    const listed = undelivered.rows.find((r) => r.id === rejected.id);
    expect(listed).toMatchObject({ enterprise_number: '0367', delivery_status: 'undelivered', delivery_code: 2 });
    expect(listed!.phone).not.toContain(sandboxTriggers.deliveryRejected);
    expect(undelivered.rows.some((r) => r.id === delivered.id)).toBe(false);
  });
});

describe('delivery in /metrics', () => {
  it('counts each final delivery status once per message, by enterprise, and times send → delivered', async () => {
    await finalRow((await send(PHONE)).id);
    // Every message of this file has finished its checks, or is left alone by the poller.
    await eventually(async () => {
      const open = await env.db.selectFrom('user_sms_send').select('id').where('delivery_status', '=', 'pending').execute();
      return open.length === 0 ? true : undefined;
    }, 20_000);
    const final = await env.db
      .selectFrom('user_sms_send')
      .select(['enterprise_number', 'delivery_status'])
      .where('delivery_status', 'in', ['delivered', 'undelivered', 'unknown'])
      .execute();
    const expected = (enterprise: string, status: string) => final.filter((r) => r.enterprise_number === enterprise && r.delivery_status === status).length;
    let text = '';
    const families = await eventually(async () => {
      text = await (await fetch(`${baseUrl}/metrics`)).text();
      const f = parsePrometheusText(text);
      return sampleValue(f, 'user_sms_delivery_seconds_count') === expected('0367', 'delivered') + expected('0368', 'delivered') ? f : undefined;
    }).catch((error: unknown) => {
      throw new Error(`${String(error)}; expected ${JSON.stringify(final)}; got ${text.split('\n').filter((l) => l.includes('delivery')).join(' | ')}`);
    });
    for (const enterprise of ['0367', '0368']) {
      for (const status of ['delivered', 'undelivered', 'unknown']) {
        expect(sampleValue(families, 'user_sms_delivery_final_total', { enterprise, status }) ?? 0, `${enterprise} ${status}`).toBe(expected(enterprise, status));
      }
    }
    expect(expected('0367', 'undelivered')).toBeGreaterThan(0);
    // Delivered at the sandbox after 1 s, learned at the check 1.5 s after the send: all in the first bucket (≤ 60 s).
    expect(sampleValue(families, 'user_sms_delivery_seconds_bucket', { le: '60' })).toBe(sampleValue(families, 'user_sms_delivery_seconds_count'));
    expect(sampleValue(families, 'user_sms_delivery_seconds_sum')).toBeGreaterThan(0);
  });
});

describe('delivery checks as a queue in the table', () => {
  let quiet: TestEnv;
  beforeAll(async () => {
    quiet = await createTestEnv(); // no worker: nothing else claims
  });
  afterAll(async () => {
    await quiet?.cleanup();
  });

  it('lists in `npm run jobs -- polling` exactly the messages still being asked about, next check first', async () => {
    const inserted = await sql<{ id: string; delivery_status: string | null }>`
      WITH messages AS (
        INSERT INTO user_sms_send (enterprise_number, phone, text, status, message_id, sent_at, delivery_status, delivery_code)
        VALUES ('0367', '+375296254070', 'a', 'success', 76440101, LOCALTIMESTAMP, 'pending', 1),
               ('0368', '+375296254070', 'b', 'success', 76440102, LOCALTIMESTAMP, 'pending', NULL),
               ('0367', '+375296254070', 'c', 'success', 76440103, LOCALTIMESTAMP, 'delivered', 3),
               ('0367', '+375296254070', 'd', 'failed', NULL, NULL, NULL, NULL)
        RETURNING id, delivery_status, message_id
      ), due AS (
        INSERT INTO delivery_due (message_id, due_at)
        SELECT id, CASE message_id WHEN 76440101 THEN now() + interval '2 hours' ELSE now() + interval '1 minute' END
        FROM messages WHERE delivery_status = 'pending'
      )
      SELECT id, delivery_status FROM messages ORDER BY id`.execute(quiet.db);
    const [later, sooner] = inserted.rows.map((r) => Number(r.id));
    const out = await runCli(quiet, 'jobs', ['polling', '--json']);
    expect(out.code, out.stderr).toBe(0);
    expect((JSON.parse(out.stdout) as Json[]).map((m) => [m.message_id, m.enterprise_number, m.delivery_code])).toEqual([
      [sooner, '0368', null],
      [later, '0367', 1],
    ]);
    const table = await runCli(quiet, 'jobs', ['polling', '--enterprise', '0367']);
    expect(table.stdout).toMatch(/^ *message \| enterprise \| sent_at +\| checks \| last_status +\| next_check/);
    expect(table.stdout).toContain('1 accepted by operator');
    expect(table.stdout).not.toContain('0368');
    await sql`DELETE FROM user_sms_send`.execute(quiet.db);
  });

  it('schedules a just-sent message to its first check without asking, then leases a due check to one claimant until the lease ends', async () => {
    const inserted = await sql<{ id: string }>`
      INSERT INTO user_sms_send (enterprise_number, phone, text, status, message_id, sent_at, delivery_status)
      VALUES ('0367', '+375296254070', 'x', 'success', 76440001, LOCALTIMESTAMP, 'pending')
      RETURNING id`.execute(quiet.db);
    const id = Number(inserted.rows[0]!.id);
    await sql`INSERT INTO delivery_due (message_id, due_at) VALUES (${String(id)}, now())`.execute(quiet.db);
    const stored = () => quiet.db.selectFrom('user_sms_send').innerJoin('delivery_due', 'delivery_due.message_id', 'user_sms_send.id').select(['delivery_due.due_at as delivery_next_check_at', 'delivery_checks']).where('id', '=', String(id)).executeTakeFirstOrThrow();
    const claim = () => claimDueChecks(quiet.db, { limit: 100, leaseMs: 60_000, scheduleMs: [60_000, 120_000] });

    // Just sent: not asked yet, but due at sent_at + 60 s.
    expect(await claim()).toEqual([]);
    const scheduled = (await stored()).delivery_next_check_at.getTime();
    expect(scheduled).toBeGreaterThan(Date.now() + 55_000);
    expect(scheduled).toBeLessThan(Date.now() + 61_000);

    // Its check comes due: one claimant gets it, leased for a minute; nobody else meanwhile.
    await sql`UPDATE user_sms_send SET sent_at = LOCALTIMESTAMP - interval '61 seconds' WHERE id = ${String(id)}`.execute(quiet.db);
    await sql`UPDATE delivery_due SET due_at = now() WHERE message_id = ${String(id)}`.execute(quiet.db);
    expect(await claim()).toEqual([{ id, enterpriseNumber: '0367', websmsMessageId: 76440001, providerRef: null, checks: 0, sentAt: expect.any(Date) as Date }]);
    expect((await stored()).delivery_next_check_at.getTime()).toBeGreaterThan(Date.now() + 55_000);
    expect(await claim()).toEqual([]);

    // The claimant died: when the lease ends the check is due again, still unused.
    await sql`UPDATE delivery_due SET due_at = now() WHERE message_id = ${String(id)}`.execute(quiet.db);
    expect((await claim()).map((c) => c.id)).toEqual([id]);
    expect((await stored()).delivery_checks).toBe(0);
  });

  it('reads each claimed message and each owed change\'s message by its key, even where the planner would rather scan the whole table', async () => {
    const inserted = await sql<{ id: string }>`
      INSERT INTO user_sms_send (enterprise_number, phone, text, status, message_id, sent_at, delivery_status, callback_url)
      SELECT '0367', '+375296254070', 'x', 'success', 76450000 + g, LOCALTIMESTAMP - interval '2 minutes', 'pending', 'https://crm.example.by/cb'
      FROM generate_series(1, 50) g
      RETURNING id`.execute(quiet.db);
    const ids = inserted.rows.map((r) => r.id);
    await sql`INSERT INTO delivery_due (message_id, due_at) SELECT unnest(${ids}::bigint[]), now()`.execute(quiet.db);
    await sql`INSERT INTO callback_owed (message_id, type, revision) SELECT unnest(${ids}::bigint[]), 'message.sent', 1`.execute(quiet.db);

    // A plan made from statistics that lag behind the table (a new table filling up, a generic plan)
    // joins by hashing the whole of user_sms_send; here the planner is told to avoid the alternative.
    const scans = await quiet.db.transaction().execute(async (trx) => {
      await sql`SET LOCAL enable_nestloop = off`.execute(trx);
      await sql`SET LOCAL enable_mergejoin = off`.execute(trx);
      const claimed = await claimDueChecks(trx, { limit: 100, leaseMs: 60_000, scheduleMs: [60_000, 120_000] });
      const owed = await findOwed(trx, 100);
      expect(claimed.map((c) => String(c.id)).sort()).toEqual([...ids].sort());
      expect(owed.map((o) => [String(o.messageId), o.message?.callbackUrl]).sort()).toEqual(ids.map((id) => [id, 'https://crm.example.by/cb']).sort());
      const { rows } = await sql<{ seq_scan: string; idx_scan: string }>`
        SELECT seq_scan, idx_scan FROM pg_stat_xact_user_tables WHERE relname = 'user_sms_send'`.execute(trx);
      return rows[0];
    });
    expect(Number(scans?.seq_scan)).toBe(0);
    expect(Number(scans?.idx_scan)).toBeGreaterThanOrEqual(100);
    await sql`DELETE FROM user_sms_send WHERE id = ANY(${ids}::bigint[])`.execute(quiet.db);
  });
});
