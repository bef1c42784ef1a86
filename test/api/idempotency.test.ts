import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { requestHash } from '../../src/messages/idempotency.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';

// Idempotency-Key on POST /send, through the real HTTP server, PostgreSQL, Redis, a worker and the
// WebSMS sandbox: the sandbox's record of calls is the evidence that nothing was sent twice.

const PHONE = '+375296254070';
let env: TestEnv;
let baseUrl: string;
let serial = 0;

const send = (body: unknown, headers: Record<string, string> = {}) => postJson(baseUrl, '/send', body, headers);
/** A body whose text appears nowhere else, so sandbox calls can be attributed to it. */
const uniqueBody = (extra: Record<string, unknown> = {}) => ({ enterprise_number: '0367', phone: PHONE, text: `idem ${++serial} ${Date.now()}`, ...extra });
const sendsOf = (text: string) => env.sandbox.calls().filter((c) => c.endpoint === 'send/sms' && c.text === text);
const rowsWithText = async (text: string) => env.db.selectFrom('user_sms_send').selectAll().where('text', '=', text).orderBy('id').execute();

beforeAll(async () => {
  env = await createTestEnv({ RATE_LIMIT_PER_WINDOW: '1000' });
  await env.seedEnterprise({ number: '0367', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  await env.seedEnterprise({ number: '0368', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  const { api } = await env.startService({ workers: 1 });
  baseUrl = api!.url;
});

afterAll(async () => {
  await env?.cleanup();
});

describe('Idempotency-Key', () => {
  it('20 parallel requests with one key create one message, make one WebSMS call, and all answer with that message', async () => {
    const body = uniqueBody({ custom_id: 'par-1' });
    const answers = await Promise.all(Array.from({ length: 20 }, () => send(body, { 'idempotency-key': 'parallel-1' })));

    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
    const ids = new Set(answers.map((a) => a.json.id));
    const providerIds = new Set(answers.map((a) => a.json.message_id));
    expect(ids.size).toBe(1);
    expect(providerIds.size).toBe(1);
    expect(answers[0]!.json).toMatchObject({ success: true, custom_id: 'par-1', status: 'success' });
    expect(answers.filter((a) => a.headers.get('idempotent-replayed') === 'true')).toHaveLength(19);

    const rows = await rowsWithText(body.text);
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({ idempotency_key: 'parallel-1', status: 'success' });
    expect(rows[0]!.request_hash).toMatch(/^[0-9a-f]{64}$/);
    expect(sendsOf(body.text)).toHaveLength(1);
  });

  it('a repeat after the message was sent returns the first answer and sends nothing', async () => {
    const body = uniqueBody({ custom_id: 'rep-1' });
    const first = await send(body, { 'idempotency-key': 'repeat-1' });
    const again = await send(body, { 'idempotency-key': 'repeat-1' });
    expect(first.status).toBe(200);
    expect(again.status).toBe(200);
    expect(withoutLink(again.json)).toEqual(withoutLink(first.json));
    await expectBothLinksWork(baseUrl, first.json, again.json);
    expect(first.headers.get('idempotent-replayed')).toBeNull();
    expect(again.headers.get('idempotent-replayed')).toBe('true');
    expect(sendsOf(body.text)).toHaveLength(1);
  });

  it('a repeat of a message WebSMS refused returns the same refusal and does not try again', async () => {
    const body = uniqueBody({ phone: '+375330000100' }); // sandbox: error 100, invalid number
    const first = await send(body, { 'idempotency-key': 'refused-1' });
    const again = await send(body, { 'idempotency-key': 'refused-1' });
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({ success: false, status: 'failed' });
    expect(withoutLink(again.json)).toEqual(withoutLink(first.json));
    await expectBothLinksWork(baseUrl, first.json, again.json);
    expect(sendsOf(body.text)).toHaveLength(1);
  });

  it('the same key with a different body is refused with 422 naming Idempotency-Key, and nothing is recorded or sent', async () => {
    const body = uniqueBody();
    const first = await send(body, { 'idempotency-key': 'conflict-1' });
    expect(first.status).toBe(200);
    const before = await env.db.selectFrom('user_sms_send').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
    for (const changed of [
      { ...body, text: `${body.text}!` },
      { ...body, phone: '+375296254071' },
      { ...body, sender: 'Other' },
      { ...body, custom_id: 'x' },
    ]) {
      const { status, json } = await send(changed, { 'idempotency-key': 'conflict-1' });
      expect(status).toBe(422);
      expect(json).toMatchObject({ success: false, message_id: null });
      expect(json.error).toContain('Idempotency-Key');
      expect(json.detail).toBe(json.error);
      expect(json.errors).toEqual([expect.objectContaining({ field: 'Idempotency-Key' })]);
    }
    const after = await env.db.selectFrom('user_sms_send').select((eb) => eb.fn.countAll<string>().as('n')).executeTakeFirstOrThrow();
    expect(after.n).toBe(before.n);
    expect(env.sandbox.calls().filter((c) => c.text?.startsWith(body.text) && c.text !== body.text)).toHaveLength(0);
  });

  it('treats the phone in another notation and an omitted default sender as the same request', async () => {
    const body = uniqueBody();
    const first = await send(body, { 'idempotency-key': 'normalised-1' });
    const again = await send({ ...body, phone: '+375 29 625-40-70', sender: 'Vochi-CRM', custom_id: null }, { 'idempotency-key': 'normalised-1' });
    expect(again.status).toBe(200);
    expect(again.json.id).toBe(first.json.id);
    expect(sendsOf(body.text)).toHaveLength(1);
  });

  it('scopes keys by enterprise: the same key for two enterprises makes two messages', async () => {
    const text = uniqueBody().text;
    const a = await send({ enterprise_number: '0367', phone: PHONE, text }, { 'idempotency-key': 'shared-key' });
    const b = await send({ enterprise_number: '0368', phone: PHONE, text }, { 'idempotency-key': 'shared-key' });
    expect(a.status).toBe(200);
    expect(b.status).toBe(200);
    expect(a.json.id).not.toBe(b.json.id);
    expect(sendsOf(text)).toHaveLength(2);
  });

  it('past the retention window the key names a new message; the old one keeps its row', async () => {
    const body = uniqueBody();
    const first = await send(body, { 'idempotency-key': 'expiring-1' });
    // 23 hours later: still the same message.
    await sql`UPDATE user_sms_send SET created_at = created_at - interval '23 hours' WHERE id = ${String(first.json.id)}`.execute(env.db);
    const within = await send(body, { 'idempotency-key': 'expiring-1' });
    expect(within.json.id).toBe(first.json.id);
    expect(sendsOf(body.text)).toHaveLength(1);

    // 25 hours later: a new message, sent; concurrent repeats agree on which.
    await sql`UPDATE user_sms_send SET created_at = created_at - interval '2 hours' WHERE id = ${String(first.json.id)}`.execute(env.db);
    const answers = await Promise.all(Array.from({ length: 10 }, () => send(body, { 'idempotency-key': 'expiring-1' })));
    const ids = new Set(answers.map((a) => a.json.id));
    expect(answers.map((a) => a.status)).toEqual(Array(10).fill(200));
    expect(ids.size).toBe(1);
    expect(ids.has(first.json.id)).toBe(false);
    expect(sendsOf(body.text)).toHaveLength(2);

    const rows = await rowsWithText(body.text);
    expect(rows.map((r) => [Number(r.id), r.idempotency_key, r.status])).toEqual([
      [first.json.id, null, 'success'],
      [[...ids][0], 'expiring-1', 'success'],
    ]);
  });

  it('a key whose first message could not be queued (caller told to retry) can be retried with the same key', async () => {
    const body = uniqueBody();
    // What acceptMessage leaves when Redis refuses the job and the row is closed: failed, never sent.
    const hash = requestHash({ enterpriseNumber: '0367', phone: PHONE, text: body.text, sender: 'Vochi-CRM', customId: null });
    await env.db
      .insertInto('user_sms_send')
      .values({ ...rowFor(body), status: 'failed', error_code: 'queue_unavailable', error_message: 'Queue unavailable', idempotency_key: 'requeue-1', request_hash: hash })
      .execute();
    const retry = await send(body, { 'idempotency-key': 'requeue-1' });
    expect(retry.status).toBe(200);
    expect(retry.json.success).toBe(true);
    expect(sendsOf(body.text)).toHaveLength(1);
  });

  it('a 404 for an unknown enterprise is recorded without the key, and so is every repeat', async () => {
    const body = { ...uniqueBody(), enterprise_number: '0999' };
    const a = await send(body, { 'idempotency-key': 'unknown-1' });
    const b = await send(body, { 'idempotency-key': 'unknown-1' });
    expect([a.status, b.status]).toEqual([404, 404]);
    const rows = await rowsWithText(body.text);
    expect(rows.map((r) => r.idempotency_key)).toEqual([null, null]);
  });

  it('accepts a 255-character key of printable ASCII, SQL included', async () => {
    const key = `'; DROP TABLE user_sms_send; --${'k'.repeat(255 - 31)}`;
    expect(key).toHaveLength(255);
    const body = uniqueBody();
    const first = await send(body, { 'idempotency-key': key });
    const again = await send(body, { 'idempotency-key': key });
    expect(first.status).toBe(200);
    expect(again.json.id).toBe(first.json.id);
  });

  it.each([
    ['longer than 255 characters', 'k'.repeat(256)],
    ['not ASCII (Latin-1 bytes on the wire)', 'caf\u00e9'],
  ])('refuses a key %s with 422 naming the header, and records nothing', async (_case, key) => {
    const body = uniqueBody();
    const { status, json } = await send(body, { 'idempotency-key': key });
    expect(status).toBe(422);
    expect(json.error).toContain('Idempotency-Key');
    expect(await rowsWithText(body.text)).toHaveLength(0);
  });

  it('refuses an empty key and a key sent twice with 422, and records nothing', async () => {
    for (const headerValue of [[''], ['one', 'two']]) {
      const body = uniqueBody();
      const { status, json } = await rawPost(body, { 'content-type': 'application/json', 'idempotency-key': headerValue });
      expect(status, JSON.stringify(headerValue)).toBe(422);
      expect(json.error).toContain('Idempotency-Key');
      expect(await rowsWithText(body.text)).toHaveLength(0);
    }
  });
});

describe('Idempotency-Key while the first message is still in flight', () => {
  let slow: TestEnv;
  let slowUrl: string;

  beforeAll(async () => {
    // One SMS per 2 s: the second message of the test waits for its slot.
    slow = await createTestEnv({ RATE_LIMIT_PER_WINDOW: '1', RATE_LIMIT_WINDOW_MS: '2000', RATE_LIMIT_MARGIN_MS: '0', SEND_WAIT_MS: '8000' });
    await slow.seedEnterprise({ number: '0367', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    const { api } = await slow.startService({ workers: 1 });
    slowUrl = api!.url;
  });

  afterAll(async () => {
    await slow?.cleanup();
  });

  it('answers 202 for the same message without waiting, waits for it when asked to, and sends it once', async () => {
    const post = (body: unknown, headers: Record<string, string> = {}) => postJson(slowUrl, '/send', body, headers);
    const text = `in flight ${Date.now()}`;
    expect((await post({ enterprise_number: '0367', phone: PHONE, text: 'takes the slot' })).status).toBe(200);

    const body = { enterprise_number: '0367', phone: PHONE, text };
    const first = await post(body, { 'idempotency-key': 'flight-1', prefer: 'respond-async' });
    expect(first.status).toBe(202);
    expect(first.json.status).toBe('queued');

    const quick = await post(body, { 'idempotency-key': 'flight-1', prefer: 'respond-async' });
    expect(quick.status).toBe(202);
    expect(quick.json).toMatchObject({ id: first.json.id, status: 'queued' });
    await expectBothLinksWork(slowUrl, first.json, quick.json);
    expect(quick.headers.get('idempotent-replayed')).toBe('true');

    // Waits (bounded by SEND_WAIT_MS) for the first request's message, like the first request would have.
    const waiting = await post(body, { 'idempotency-key': 'flight-1' });
    expect(waiting.status).toBe(200);
    expect(waiting.json).toMatchObject({ id: first.json.id, success: true, status: 'success' });

    const sends = slow.sandbox.calls().filter((c) => c.endpoint === 'send/sms' && c.text === text);
    expect(sends).toHaveLength(1);
    expect(waiting.json.message_id).toBe(sends[0]!.messageId);
    const rows = await slow.db.selectFrom('user_sms_send').select('id').where('text', '=', text).execute();
    expect(rows).toHaveLength(1);
    await eventually(async () => ((await slow.db.selectFrom('user_sms_send').select('status').where('text', '=', text).executeTakeFirst())?.status === 'success' ? true : undefined));
  });
});

/** The answer without its status link: a replay hands out a new one, the first may have been lost. */
function withoutLink(json: Record<string, unknown>): Record<string, unknown> {
  const { status_url: link, ...rest } = json;
  expect(link).toMatch(/^\/messages\/\d+\?key=[\w-]{32}$/);
  return rest;
}

/** Both answers' links open the same message, through a proxy (no operator): the first link survives the replay. */
async function expectBothLinksWork(base: string, first: Record<string, unknown>, replay: Record<string, unknown>) {
  expect(replay.status_url).not.toBe(first.status_url);
  for (const link of [first.status_url, replay.status_url]) {
    const answer = await fetch(`${base}${String(link)}`, { headers: { 'x-forwarded-for': '203.0.113.7' } });
    expect(answer.status).toBe(200);
    expect(((await answer.json()) as { id: number }).id).toBe(first.id);
  }
}

function rowFor(body: { enterprise_number: string; phone: string; text: string }) {
  return { enterprise_number: body.enterprise_number, phone: body.phone, text: body.text, sender: 'Vochi-CRM' };
}

/** node:http instead of fetch: fetch joins repeated headers into one and cannot send an empty value the same way. */
function rawPost(body: unknown, headers: Record<string, string | string[]>): Promise<{ status: number; json: Record<string, unknown> }> {
  const url = new URL('/send', baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> }));
    });
    req.on('error', reject);
    req.end(JSON.stringify(body));
  });
}
