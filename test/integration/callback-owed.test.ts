import { randomBytes } from 'node:crypto';
import { sql, type Transaction } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Receiver } from '../support/callback-receiver.ts';
import { runCli } from '../support/cli.ts';
import type { Database } from '../../src/db/database.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';

// A message's change leaves its event owed in the same statement (callback_owed), and the background
// work raises what is owed: whoever made the change (a send worker, the delivery poller, an operator
// with SQL) needs to do nothing more, and a process killed right after its change loses nothing.
// Here the changes are written as a worker would write them, and nobody raises anything by hand.
// A cancel or a drop raises its event at once, like any final status.

const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const PHONE = '+375296254070';

const receiver = new Receiver(SECRET);
let env: TestEnv;
let api: string;

beforeAll(async () => {
  await receiver.start();
  env = await createTestEnv({
    CALLBACK_ALLOWED_HOSTS: '127.0.0.1',
    CALLBACK_SIGNING_SECRET: SECRET,
    CALLBACK_RETRY_BACKOFF_MS: '100',
  });
  // 0368 sends 3 messages at once and its next ones wait in line for a minute (the default window).
  for (const number of ['0367', '0368']) await env.seedEnterprise({ number, customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  api = (await env.startService({ workers: 1 })).api!.url;
});

afterAll(async () => {
  await env?.cleanup();
  await receiver.stop();
});

async function owed(messageId: number): Promise<string[]> {
  const result = await sql<{ type: string }>`SELECT type FROM callback_owed WHERE message_id = ${String(messageId)} ORDER BY type`.execute(env.db);
  return result.rows.map((row) => row.type);
}

/** A message stored as accepted and never queued: no worker will touch it unless told to. */
async function storedMessage(callbackUrl: string | null): Promise<number> {
  const row = await env.db
    .insertInto('user_sms_send')
    .values({ enterprise_number: '0367', phone: PHONE, text: 'owed', status: 'sending', provider_ref: `u${randomBytes(6).toString('hex')}`, callback_url: callbackUrl })
    .returning('id')
    .executeTakeFirstOrThrow();
  return Number(row.id);
}

/**
 * How many times this transaction has run the trigger's function so far: needs `track_functions`
 * set to 'pl' in the same transaction first (superuser only). PostgreSQL answers null before the
 * first call.
 */
async function triggerFunctionCalls(trx: Transaction<Database>): Promise<number> {
  const result = await sql<{ calls: string | null }>`SELECT pg_stat_get_xact_function_calls('user_sms_callback_owed'::regproc) AS calls`.execute(trx);
  return Number(result.rows[0]?.calls ?? 0);
}

function typesAt(path: string): string[] {
  return receiver.at(path).map((r) => (JSON.parse(r.body) as { type: string }).type);
}

describe('events owed by a message change', () => {
  it('are raised and delivered when the process that changed the message did nothing more', async () => {
    const id = await storedMessage(receiver.url('/died-after-send'));
    // The send worker's final write, then nothing (killed): the change is owed until raised.
    await sql`UPDATE user_sms_send SET status = 'success', message_id = 990001, sent_at = now(), updated_at = now() WHERE id = ${String(id)}`.execute(env.db);

    const [event] = await eventually(() => (receiver.at('/died-after-send').length > 0 ? receiver.at('/died-after-send') : undefined), 20_000);
    expect(event!.verified).toBe(true);
    expect(JSON.parse(event!.body)).toMatchObject({ type: 'message.sent', data: { id, status: 'success', message_id: 990001 } });
    expect(await owed(id)).toEqual([]);
  });

  it('are raised for a send outcome and a delivery status recorded before either was raised, in order', async () => {
    const id = await storedMessage(receiver.url('/died-after-delivery'));
    await sql`UPDATE user_sms_send SET status = 'success', message_id = 990002, sent_at = now(), delivery_status = 'pending' WHERE id = ${String(id)}`.execute(env.db);
    await sql`UPDATE user_sms_send SET delivery_status = 'delivered', delivery_code = 3, delivered_at = now() WHERE id = ${String(id)}`.execute(env.db);

    await eventually(() => (receiver.at('/died-after-delivery').length === 2 ? true : undefined), 20_000);
    expect(typesAt('/died-after-delivery')).toEqual(['message.sent', 'message.delivered']);
    expect(await owed(id)).toEqual([]);
  });

  it('leave no marker for messages without a callback_url, and none behind once a sent message is announced', async () => {
    const silent = await storedMessage(null);
    await sql`UPDATE user_sms_send SET status = 'failed', error_message = 'x' WHERE id = ${String(silent)}`.execute(env.db);
    expect(await owed(silent)).toEqual([]);

    const sent = await postJson(api, '/send', { enterprise_number: '0367', phone: PHONE, text: 'announced', callback_url: receiver.url('/announced') });
    expect(sent.status).toBe(200);
    await eventually(() => (receiver.at('/announced').length === 1 ? true : undefined));
    expect(await owed(sent.json.id as number)).toEqual([]);
  });

  it("are looked for only on a final send or delivery status: a worker's claim and a delivery look-up still pending never run the trigger's function", async () => {
    await env.db.transaction().execute(async (trx) => {
      await sql`SET LOCAL track_functions = 'pl'`.execute(trx);
      // Inserted in this transaction: nobody else sees it, let alone claims it.
      const row = await trx
        .insertInto('user_sms_send')
        .values({ enterprise_number: '0367', phone: PHONE, text: 'owed', status: 'queued', provider_ref: `u${randomBytes(6).toString('hex')}`, callback_url: receiver.url('/claimed') })
        .returning('id')
        .executeTakeFirstOrThrow();
      const id = String(row.id);

      // The send worker's claim (claimForSending): the row has a callback_url, nothing is owed.
      await sql`UPDATE user_sms_send SET status = 'sending', attempts = attempts + 1, claimed_at = now(), not_before = NULL, updated_at = now() WHERE id = ${id}`.execute(trx);
      expect(await triggerFunctionCalls(trx)).toBe(0);

      // The send's final status: owed.
      await sql`UPDATE user_sms_send SET status = 'success', message_id = 990003, sent_at = now(), delivery_status = 'pending', updated_at = now() WHERE id = ${id}`.execute(trx);
      expect(await triggerFunctionCalls(trx)).toBe(1);

      // The delivery poller's look-up that found the message still pending: nothing owed.
      await sql`UPDATE user_sms_send SET delivery_checks = delivery_checks + 1, delivery_status = 'pending' WHERE id = ${id}`.execute(trx);
      expect(await triggerFunctionCalls(trx)).toBe(1);

      // The final delivery status: owed.
      await sql`UPDATE user_sms_send SET delivery_checks = delivery_checks + 1, delivery_status = 'delivered', delivery_code = 3, delivered_at = now() WHERE id = ${id}`.execute(trx);
      expect(await triggerFunctionCalls(trx)).toBe(2);

      const markers = await sql<{ type: string; revision: number }>`SELECT type, revision FROM callback_owed WHERE message_id = ${id} ORDER BY type`.execute(trx);
      expect(markers.rows).toEqual([
        { type: 'message.delivered', revision: 1 },
        { type: 'message.sent', revision: 1 },
      ]);
    });
  });

  it('forget a change the message has since moved past, and raise the later one with its own state', async () => {
    const id = await storedMessage(receiver.url('/moved-on'));
    // Failed, retried by an operator (a new revision), failed again: two changes owed, the first of
    // which can no longer be described (the row now says "second").
    await env.db.transaction().execute(async (trx) => {
      await sql`UPDATE user_sms_send SET status = 'failed', error_message = 'first' WHERE id = ${String(id)}`.execute(trx);
      await sql`UPDATE user_sms_send SET status = 'pending', operator_actions = operator_actions || '[{"action":"retry"}]'::jsonb WHERE id = ${String(id)}`.execute(trx);
      await sql`UPDATE user_sms_send SET status = 'failed', error_message = 'second' WHERE id = ${String(id)}`.execute(trx);
    });
    await eventually(async () => ((await owed(id)).length === 0 && receiver.at('/moved-on').length > 0 ? true : undefined), 20_000);
    expect(receiver.at('/moved-on').map((r) => JSON.parse(r.body) as { type: string; data: { error: string } })).toMatchObject([
      { type: 'message.failed', data: { error: 'second' } },
    ]);
  });
});

describe('a cancel and a drop', () => {
  beforeAll(async () => {
    const filler = await Promise.all([1, 2, 3].map(() => postJson(api, '/send?wait=false', { enterprise_number: '0368', phone: PHONE, text: 'filler' })));
    expect(filler.every((r) => r.status === 202)).toBe(true);
  });

  async function waitingMessage(path: string): Promise<{ id: number; statusUrl: string }> {
    const r = await postJson(api, '/send?wait=false', { enterprise_number: '0368', phone: PHONE, text: 'waits', callback_url: receiver.url(path) });
    expect(r.status).toBe(202);
    return { id: r.json.id as number, statusUrl: r.json.status_url as string };
  }

  it('raise message.failed at once when a caller cancels a waiting message', async () => {
    const { id, statusUrl } = await waitingMessage('/cancelled');
    const cancelled = await fetch(`${api}${statusUrl}`, { method: 'DELETE' });
    expect(cancelled.status).toBe(200);
    // Raised by the cancel itself, not left to the background work.
    expect(await owed(id)).toEqual([]);
    const [event] = await eventually(() => (receiver.at('/cancelled').length > 0 ? receiver.at('/cancelled') : undefined), 20_000);
    const body = JSON.parse(event!.body) as { type: string; data: Record<string, unknown> };
    expect(body).toMatchObject({ type: 'message.failed', data: { id, status: 'failed' } });
    expect(String(body.data.error)).toMatch(/^Cancelled by /);
  });

  it('raise message.failed when an operator drops a waiting message with npm run jobs', async () => {
    const { id } = await waitingMessage('/dropped');
    const result = await runCli(env, 'jobs', ['drop', String(id), '--reason', 'customer asked']);
    expect(result.code, result.stderr).toBe(0);
    expect(await owed(id)).toEqual([]);
    const [event] = await eventually(() => (receiver.at('/dropped').length > 0 ? receiver.at('/dropped') : undefined), 20_000);
    expect(JSON.parse(event!.body)).toMatchObject({ type: 'message.failed', data: { id, status: 'failed' } });
  });
});
