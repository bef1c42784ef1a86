import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { sandboxTriggers } from '../../src/websms/sandbox.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';

// The old service's contract, status code by status code, through a real HTTP server, real
// PostgreSQL, Redis and a worker, with only WebSMS replaced by the sandbox.

let env: TestEnv;
let baseUrl: string;

const PHONE = '+375296254070';
const send = (body: unknown, headers: Record<string, string> = {}) => postJson(baseUrl, '/send', body, headers);
const rowCount = async () => Number((await sql<{ n: string }>`SELECT count(*) AS n FROM user_sms_send`.execute(env.db)).rows[0]?.n);

beforeAll(async () => {
  // The contract is not about the rate limit (tested on its own): keep it out of the way.
  env = await createTestEnv({ RATE_LIMIT_PER_WINDOW: '1000' });
  await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  await env.seedEnterprise({ number: '0400', customDomain: null });
  await env.seedEnterprise({ number: '0401', customDomain: '' });
  await env.seedEnterprise({ number: '0402', customDomain: 'nospace' });
  await env.seedEnterprise({ number: '0403', customDomain: `${DEMO_USER} ${DEMO_KEY}`, active: false });
  const { api } = await env.startService({ workers: 1 });
  baseUrl = api!.url;
});

afterAll(async () => {
  await env?.cleanup();
});

describe('GET /', () => {
  it('describes the service with the send URL and default sender, and no secret', async () => {
    const response = await fetch(`${baseUrl}/`);
    const body = (await response.json()) as Record<string, unknown>;
    expect(response.status).toBe(200);
    expect(body).toMatchObject({
      service: 'User SMS Sending Service',
      status: 'running',
      config: { websms_url: `${env.sandbox.url}/send/sms`, default_sender: 'Vochi-CRM' },
    });
    expect(Date.parse(body.timestamp as string)).not.toBeNaN();
    expect(JSON.stringify(body)).not.toContain(DEMO_KEY);
  });
});

describe('POST /send', () => {
  it('answers 200 with the documented envelope and WebSMS figures when the SMS is sent', async () => {
    const { status, json } = await send({ enterprise_number: '0367', phone: PHONE, text: 'Тест сообщения от предприятия', custom_id: 'order_98765' });
    expect(status).toBe(200);
    expect(json).toMatchObject({ success: true, custom_id: 'order_98765', error: null, status: 'success' });
    expect(json.message_id).toEqual(expect.any(Number));
    expect(json.price).toBe(0.014732);
    expect(json.parts).toBe(1);
    expect(json.amount).toBe(0.014732);
    expect(json).not.toHaveProperty('detail');
    const calls = env.sandbox.acceptedSends().filter((c) => c.messageId === json.message_id);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ user: DEMO_USER, msisdn: '375296254070', sender: 'Vochi-CRM', text: 'Тест сообщения от предприятия' });
  });

  it('records every documented column of a sent message', async () => {
    const { json } = await send(
      { enterprise_number: '0367', phone: PHONE, text: 'columns', sender: 'MyCompany', custom_id: 'c-1' },
      { 'user-agent': 'crm-client/2.1', 'x-service-name': 'crm' },
    );
    const row = await env.db.selectFrom('user_sms_send').selectAll().where('id', '=', String(json.id)).executeTakeFirstOrThrow();
    expect(row).toMatchObject({
      enterprise_number: '0367',
      enterprise_name: 'june',
      phone: PHONE,
      text: 'columns',
      sender: 'MyCompany',
      message_id: String(json.message_id),
      custom_id: 'c-1',
      status: 'success',
      price: '0.014732',
      parts: 1,
      amount: '0.014732',
      error_message: null,
      service_name: 'crm',
      request_ip: '127.0.0.1',
      user_agent: 'crm-client/2.1',
      attempts: 1,
    });
    expect(row.response_data).toMatchObject({ status: true, message_id: json.message_id, custom_id: row.provider_ref });
    expect(row.created_at).toBeInstanceOf(Date);
    expect(row.sent_at).toBeInstanceOf(Date);
    expect(row.sent_at!.getTime()).toBeGreaterThanOrEqual(row.created_at.getTime());
  });

  it('takes the client address from X-Real-IP only when the peer is a trusted proxy (loopback)', async () => {
    const { json } = await send({ enterprise_number: '0367', phone: PHONE, text: 'behind nginx' }, { 'x-real-ip': '203.0.113.7' });
    const row = await env.db.selectFrom('user_sms_send').select('request_ip').where('id', '=', String(json.id)).executeTakeFirstOrThrow();
    expect(row.request_ip).toBe('203.0.113.7');
  });

  it('answers 400 for a phone that cannot be an international number, and records nothing', async () => {
    const before = await rowCount();
    // No '+', a country code alone, too long and too short for Belarus, letters, an unknown country code.
    for (const phone of ['375296254070', '+375', '+37529625407099999', '+37529000', 'not a phone', '+999123456789']) {
      const { status, json } = await send({ enterprise_number: '0367', phone, text: 'x' });
      expect(status, phone).toBe(400);
      expect(json).toMatchObject({ success: false, message_id: null, price: null, parts: null, amount: null, custom_id: null });
      expect(json.error).toMatch(/phone/i);
      expect(json.detail).toBe(json.error);
    }
    expect(await rowCount()).toBe(before);
  });

  it.each([
    ['NULL custom_domain', '0400'],
    ['empty custom_domain', '0401'],
    ['custom_domain without a space', '0402'],
    ['an inactive enterprise', '0403'],
    ['an unknown enterprise', '0999'],
  ])('answers 404 with the documented text for %s, and records the attempt', async (_case, number) => {
    const { status, json } = await send({ enterprise_number: number, phone: PHONE, text: 'probe' }, { 'user-agent': 'probe/1', 'x-service-name': 'scanner' });
    expect(status).toBe(404);
    expect(json.error).toBe(`Enterprise ${number} not found or has no WebSMS configuration`);
    expect(json.detail).toBe(json.error);
    expect(json.success).toBe(false);
    const row = await env.db.selectFrom('user_sms_send').selectAll().where('id', '=', String(json.id)).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ enterprise_number: number, status: 'failed', user_agent: 'probe/1', service_name: 'scanner', request_ip: '127.0.0.1' });
    expect(row.error_message).toContain('not found');
    expect(env.sandbox.calls().some((c) => c.text === 'probe')).toBe(false);
  });

  it.each([
    ['missing text', { enterprise_number: '0367', phone: PHONE }, 'text'],
    ['empty text', { enterprise_number: '0367', phone: PHONE, text: '' }, 'text'],
    ['1001-character text', { enterprise_number: '0367', phone: PHONE, text: 'a'.repeat(1001) }, 'text'],
    ['12-character sender', { enterprise_number: '0367', phone: PHONE, text: 'x', sender: 'ABCDEFGHIJKL' }, 'sender'],
    ['21-character custom_id', { enterprise_number: '0367', phone: PHONE, text: 'x', custom_id: 'c'.repeat(21) }, 'custom_id'],
    ['11-character enterprise_number', { enterprise_number: '03670367036', phone: PHONE, text: 'x' }, 'enterprise_number'],
    ['numeric phone', { enterprise_number: '0367', phone: 375296254070, text: 'x' }, 'phone'],
    ['missing enterprise_number', { phone: PHONE, text: 'x' }, 'enterprise_number'],
    ['NUL in text', { enterprise_number: '0367', phone: PHONE, text: 'a\u0000b' }, 'text'],
    ['a JSON array body', [1, 2], 'body'],
  ])('answers 422 naming the field for %s, and records nothing', async (_case, body, field) => {
    const before = await rowCount();
    const { status, json } = await send(body);
    expect(status).toBe(422);
    expect(json.success).toBe(false);
    expect(json.error).toContain(field);
    expect(json.detail).toBe(json.error);
    expect(json.errors).toEqual(expect.arrayContaining([expect.objectContaining({ field })]));
    expect(await rowCount()).toBe(before);
  });

  it('accepts the boundary lengths: 1000 characters of text (emoji count once), 11 of sender, 20 of custom_id', async () => {
    const text = '😀'.repeat(1000);
    const { status, json } = await send({ enterprise_number: '0367', phone: PHONE, text, sender: 'ABCDEFGHIJK', custom_id: 'c'.repeat(20) });
    expect(status).toBe(200);
    expect(json.success).toBe(true);
  });

  it('answers 400 for malformed JSON, 415 for another content type, 413 for a huge body', async () => {
    const malformed = await send('{"enterprise_number": "0367", ');
    expect(malformed.status).toBe(400);
    expect(malformed.json.error).toMatch(/JSON/);

    const form = await fetch(`${baseUrl}/send`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'enterprise_number=0367' });
    expect(form.status).toBe(415);
    expect(((await form.json()) as { error: string }).error).toMatch(/Content-Type/);

    const huge = await send({ enterprise_number: '0367', phone: PHONE, text: 'x'.repeat(200_000) });
    expect(huge.status).toBe(413);
    expect(huge.json.success).toBe(false);
  });

  it('sends a possible number in a range the allocation tables do not list, normalised to E.164, and answers 200', async () => {
    for (const [input, phone] of [
      ['+375290000100', '+375290000100'],
      ['+375 (29) 000-05-00', '+375290000500'],
      ['+375 29 000 05 04', '+375290000504'],
    ] as const) {
      const { status, json } = await send({ enterprise_number: '0367', phone: input, text: `unlisted ${input}` });
      expect(status, input).toBe(200);
      expect(json, input).toMatchObject({ success: true, error: null, status: 'success' });
      expect(env.sandbox.acceptedSends().filter((c) => c.text === `unlisted ${input}`).map((c) => c.msisdn)).toEqual([phone.slice(1)]);
      const row = await env.db.selectFrom('user_sms_send').selectAll().where('id', '=', String(json.id)).executeTakeFirstOrThrow();
      expect(row, input).toMatchObject({ phone, status: 'success', message_id: String(json.message_id) });
    }
  });

  it("leaves a possible number's fate to WebSMS: its invalid-number error is a 200 with success:false and a failed row", async () => {
    // The sandbox's invalid-number trigger, written with separators: +375 33 000-01-00.
    const digits = sandboxTriggers.invalidNumber;
    const written = `+${digits.slice(0, 3)} ${digits.slice(3, 5)} ${digits.slice(5, 8)}-${digits.slice(8, 10)}-${digits.slice(10)}`;
    const { status, json } = await send({ enterprise_number: '0367', phone: written, text: 'websms says invalid' });
    expect(status).toBe(200);
    expect(json).toMatchObject({ success: false, message_id: null, price: null, status: 'failed' });
    expect(json.error).toMatch(/WebSMS error 100/);
    const calls = env.sandbox.calls().filter((c) => c.text === 'websms says invalid');
    expect(calls).toMatchObject([{ endpoint: 'send/sms', msisdn: sandboxTriggers.invalidNumber, result: 'rejected', errorCode: 100 }]);
    const row = await env.db.selectFrom('user_sms_send').selectAll().where('id', '=', String(json.id)).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ phone: `+${sandboxTriggers.invalidNumber}`, status: 'failed', error_code: 'websms_100', message_id: null });
    expect(row.error_message).toMatch(/WebSMS error 100/);
  });

  it('answers 200 with success:false and the WebSMS code when WebSMS refuses the message', async () => {
    const { status, json } = await send({ enterprise_number: '0367', phone: `+${sandboxTriggers.invalidNumber}`, text: 'refused' });
    expect(status).toBe(200);
    expect(json).toMatchObject({ success: false, message_id: null, status: 'failed' });
    expect(json.error).toMatch(/WebSMS error 100/);
    const row = await env.db.selectFrom('user_sms_send').selectAll().where('id', '=', String(json.id)).executeTakeFirstOrThrow();
    expect(row.status).toBe('failed');
    expect(row.response_data).toMatchObject({ status: false });
  });

  it('answers 202 at once with the message id when the caller asks not to wait, and sends it anyway', async () => {
    const { status, json } = await send({ enterprise_number: '0367', phone: PHONE, text: 'no wait' }, { prefer: 'respond-async' });
    expect(status).toBe(202);
    // As of acceptance, however fast a worker takes it: its status_url tells what became of it.
    expect(json).toMatchObject({ success: false, error: null, status: 'queued' });
    expect(json.status_url).toMatch(new RegExp(`^/messages/${String(json.id)}\\?key=[\\w-]{32}$`));
    const message = await eventually(async () => {
      // As the CRM asks: through its status link, from elsewhere (not the operator's local peer).
      const r = await fetch(`${baseUrl}${String(json.status_url)}`, { headers: { 'x-forwarded-for': '203.0.113.7' } });
      const m = (await r.json()) as Record<string, unknown>;
      return m.status === 'success' ? m : undefined;
    });
    expect(message.message_id).toEqual(expect.any(Number));
  });
});

describe('GET /messages/{id}', () => {
  it('shows the stored state with a masked phone', async () => {
    const sent = await send({ enterprise_number: '0367', phone: PHONE, text: 'state', custom_id: 'st-1' });
    const response = await fetch(`${baseUrl}/messages/${String(sent.json.id)}`);
    const body = (await response.json()) as Record<string, unknown>;
    expect(response.status).toBe(200);
    expect(body).toMatchObject({ id: sent.json.id, status: 'success', custom_id: 'st-1', message_id: sent.json.message_id, attempts: 1, enterprise_number: '0367' });
    expect(body.phone).not.toBe(PHONE);
    expect(body.phone).toMatch(/^\+37529\*+70$/);
    expect(Date.parse(body.sent_at as string)).not.toBeNaN();
  });

  it('answers 400 for a malformed id and 404 for an unknown one', async () => {
    expect((await fetch(`${baseUrl}/messages/abc`)).status).toBe(400);
    const missing = await fetch(`${baseUrl}/messages/999999999`);
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { error: string }).error).toContain('999999999');
  });
});

describe('GET /health, /docs', () => {
  it('is healthy with the database, Redis, the queue and a live worker', async () => {
    const response = await fetch(`${baseUrl}/health`);
    const body = (await response.json()) as Record<string, unknown>;
    expect(response.status).toBe(200);
    expect(body).toMatchObject({ status: 'healthy', database: 'ok', redis: 'ok' });
    expect(body.workers).toBeGreaterThanOrEqual(1);
    expect(body.queue).toHaveProperty('waiting');
  });

  it('serves Swagger UI and an OpenAPI document generated from the request schema', async () => {
    const docs = await fetch(`${baseUrl}/docs/`);
    expect(docs.status).toBe(200);
    expect(await docs.text()).toContain('swagger');
    const spec = (await (await fetch(`${baseUrl}/openapi.json`)).json()) as { components: { schemas: { SendRequest: { properties: Record<string, { maxLength?: number }>; required: string[] } } } };
    const request = spec.components.schemas.SendRequest;
    expect(Object.keys(request.properties)).toEqual(expect.arrayContaining(['enterprise_number', 'phone', 'text', 'sender', 'custom_id']));
    expect(request.required).toEqual(expect.arrayContaining(['enterprise_number', 'phone', 'text']));
  });

  it('answers unknown paths with a 404 envelope, not an HTML page', async () => {
    const response = await fetch(`${baseUrl}/nope`);
    expect(response.status).toBe(404);
    expect(((await response.json()) as { success: boolean }).success).toBe(false);
  });
});
