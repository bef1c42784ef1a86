import { createHash, createHmac, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callbackEmitPorts } from '../../src/callbacks/callback-delivery.ts';
import { emitMessageEvent } from '../../src/callbacks/emit-message-event.ts';
import { sandboxTriggers } from '../../src/websms/sandbox.ts';
import { Receiver, type Received } from '../support/callback-receiver.ts';
import { runCli } from '../support/cli.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';

// Callbacks end to end: the API and a worker in this process, the WebSMS sandbox, and a real HTTP
// receiver on 127.0.0.1 that verifies every request with the Standard Webhooks library's own verify.
// Backoff and retry window are compressed by configuration.

const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const PHONE = '+375296254070';
const TEXT = 'Callback secret text 4711';
const TOKEN = 'crm-token-callbacks-test-0123456789';

const receiver = new Receiver(SECRET);
let env: TestEnv;
let api: string;

function tokenHash(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

function send(body: Record<string, unknown>, headers: Record<string, string> = {}) {
  return postJson(api, '/send', { enterprise_number: '0367', phone: PHONE, text: TEXT, ...body }, { authorization: `Bearer ${TOKEN}`, ...headers });
}

async function messageCount(): Promise<number> {
  const result = await sql<{ n: string }>`SELECT count(*) AS n FROM user_sms_send`.execute(env.db);
  return Number(result.rows[0]?.n);
}

async function eventRows(messageId: number) {
  const result = await sql<{ id: string; type: string; status: string; attempts: number; webhook_id: string; last_error: string | null }>`
    SELECT id, type, status, attempts, webhook_id, last_error FROM callback_events WHERE message_id = ${String(messageId)} ORDER BY id`.execute(env.db);
  return result.rows;
}

function parsed(r: Received): { type: string; timestamp: string; data: Record<string, unknown> } {
  return JSON.parse(r.body) as { type: string; timestamp: string; data: Record<string, unknown> };
}

/** The spec's algorithm by hand, beside the library: base64 HMAC-SHA256 of "id.timestamp.body" with the decoded secret. */
function specSignature(r: Received): string {
  const key = Buffer.from(SECRET.slice('whsec_'.length), 'base64');
  return `v1,${createHmac('sha256', key).update(`${r.headers['webhook-id']}.${r.headers['webhook-timestamp']}.${r.body}`).digest('base64')}`;
}

beforeAll(async () => {
  await receiver.start();
  env = await createTestEnv({
    CALLBACK_ALLOWED_HOSTS: '127.0.0.1',
    CALLBACK_SIGNING_SECRET: SECRET,
    CALLBACK_RETRY_BACKOFF_MS: '100',
    CALLBACK_RETRY_FOR_S: '60',
    CALLBACK_TIMEOUT_MS: '400',
    // Many messages of one enterprise: its rate limit is not what these tests are about.
    RATE_LIMIT_PER_WINDOW: '1000',
    API_TOKENS: `crm:${tokenHash(TOKEN)}:*:${receiver.url('/token-default')}`,
  });
  await env.seedEnterprise({ number: '0367', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  const { api: running } = await env.startService({ workers: 1 });
  api = running!.url;
});

afterAll(async () => {
  await env?.cleanup();
  await receiver.stop();
});

describe('callbacks', () => {
  it('deliver message.sent and message.failed signed per Standard Webhooks, with the message and nothing secret', async () => {
    const sent = await send({ callback_url: receiver.url('/sent'), custom_id: 'order-1' });
    expect(sent.status, sent.text).toBe(200);
    const failed = await send({ callback_url: receiver.url('/failed'), phone: `+${sandboxTriggers.invalidNumber}` });
    expect(failed.status, failed.text).toBe(200);
    expect(failed.json.success).toBe(false);

    const [sentEvent] = await eventually(() => (receiver.at('/sent').length > 0 ? receiver.at('/sent') : undefined));
    const [failedEvent] = await eventually(() => (receiver.at('/failed').length > 0 ? receiver.at('/failed') : undefined));
    for (const event of [sentEvent!, failedEvent!]) {
      expect(event.verified).toBe(true);
      expect(event.headers['webhook-signature']).toBe(specSignature(event));
      expect(event.headers['webhook-id']).toMatch(/^msg_[0-9a-f]{32}$/);
      expect(Math.abs(Number(event.headers['webhook-timestamp']) - Date.now() / 1000)).toBeLessThan(30);
      expect(event.headers['content-type']).toBe('application/json');
    }
    const s = parsed(sentEvent!);
    expect(s.type).toBe('message.sent');
    expect(Object.keys(s.data).sort()).toEqual(
      ['amount', 'custom_id', 'delivered_at', 'delivery_status', 'enterprise_number', 'error', 'id', 'message_id', 'parts', 'price', 'sent_at', 'status'].sort(),
    );
    expect(s.data).toMatchObject({ id: sent.json.id, enterprise_number: '0367', status: 'success', message_id: sent.json.message_id, custom_id: 'order-1', error: null });
    expect(typeof s.data.sent_at).toBe('string');
    const f = parsed(failedEvent!);
    expect(f.type).toBe('message.failed');
    expect(f.data).toMatchObject({ id: failed.json.id, status: 'failed', message_id: null, sent_at: null });
    expect(String(f.data.error)).toMatch(/WebSMS error 100/);
  });

  it('deliver one message’s events in order, each retried with the same webhook-id until the receiver takes it', async () => {
    // The receiver fails the first two attempts; a later event of the same message waits for the first.
    receiver.script('/ordered', ['fail500', 'fail500']);
    const sent = await send({ callback_url: receiver.url('/ordered') });
    expect(sent.status).toBe(200);
    const id = sent.json.id as number;
    // As the delivery poller raises them.
    await eventually(async () => ((await eventRows(id)).length === 1 ? true : undefined));
    await emitMessageEvent(callbackEmitPorts(env.db, env.logger), id, 'message.delivered');
    // Raising the same change twice records it once.
    expect((await emitMessageEvent(callbackEmitPorts(env.db, env.logger), id, 'message.delivered')).kind).toBe('already-raised');
    const received = await eventually(() => {
      const ok = receiver.at('/ordered').filter((r) => r.answered === 'ok');
      return ok.length === 2 ? receiver.at('/ordered') : undefined;
    });
    expect(received.map((r) => [parsed(r).type, r.answered])).toEqual([
      ['message.sent', 'fail500'],
      ['message.sent', 'fail500'],
      ['message.sent', 'ok'],
      ['message.delivered', 'ok'],
    ]);
    expect(new Set(received.slice(0, 3).map((r) => r.headers['webhook-id'])).size).toBe(1);
    expect(new Set(received.slice(0, 3).map((r) => r.body)).size).toBe(1);
    expect(received[3]!.headers['webhook-id']).not.toBe(received[0]!.headers['webhook-id']);
    expect(received.every((r) => r.verified)).toBe(true);
    // Backoff: 100 ms, then 200 ms.
    expect(received[1]!.at - received[0]!.at).toBeGreaterThanOrEqual(90);
    expect(received[2]!.at - received[1]!.at).toBeGreaterThanOrEqual(190);
    const rows = await eventually(async () => {
      const r = await eventRows(id);
      return r.every((e) => e.status === 'delivered') ? r : undefined;
    });
    expect(rows.map((r) => [r.type, r.status, r.attempts])).toEqual([
      ['message.sent', 'delivered', 3],
      ['message.delivered', 'delivered', 1],
    ]);
  });

  it.each([
    ['hangs', 'hang' as const],
    ['answers 500', 'fail500' as const],
    ['redirects', 'redirect' as const],
    ['resets the connection', 'reset' as const],
  ])('retry a receiver that %s, with the same webhook-id, until it answers; redirects are never followed', async (_what, behaviour) => {
    const path = `/flaky-${behaviour}`;
    receiver.script(path, [behaviour, behaviour]);
    const sent = await send({ callback_url: receiver.url(path) });
    expect(sent.status).toBe(200);
    const received = await eventually(() => (receiver.at(path).some((r) => r.answered === 'ok') ? receiver.at(path) : undefined), 20_000);
    expect(received.map((r) => r.answered)).toEqual([behaviour, behaviour, 'ok']);
    expect(new Set(received.map((r) => r.headers['webhook-id'])).size).toBe(1);
    expect(received.every((r) => r.verified)).toBe(true);
    const row = await eventually(async () => {
      const [r] = await eventRows(sent.json.id as number);
      return r?.status === 'delivered' ? r : undefined;
    });
    expect(row.attempts).toBe(3);
    expect(receiver.at('/redirected-to')).toEqual([]);
  });

  it("use the token's default callback_url when the request names none", async () => {
    const sent = await send({});
    expect(sent.status).toBe(200);
    const [event] = await eventually(() => (receiver.at('/token-default').length > 0 ? receiver.at('/token-default') : undefined));
    expect(parsed(event!).data.id).toBe(sent.json.id);
  });

  it('refuse a bad callback_url or a host not allowed with 422 naming the field or the setting, recording and sending nothing', async () => {
    const rowsBefore = await messageCount();
    const callsBefore = env.sandbox.calls().length;
    const bad = ['ftp://127.0.0.1/x', '/relative', 'http://', 'javascript:alert(1)', 'http://127.0.0.1/a b', 'http://u:p@127.0.0.1/x', `http://127.0.0.1/${'a'.repeat(2048)}`, 42, true, {}];
    for (const url of bad) {
      const answer = await send({ callback_url: url });
      expect(answer.status, JSON.stringify(url)).toBe(422);
      expect((answer.json.errors as Array<{ field: string }>).map((e) => e.field)).toEqual(['callback_url']);
      expect(answer.json.detail).toBe(answer.json.error);
    }
    for (const url of ['http://example.com/x', 'http://localhost:1234/x', 'http://169.254.169.254/latest/meta-data', 'http://[::1]/x', 'http://2130706433.example/x']) {
      const answer = await send({ callback_url: url });
      expect(answer.status, url).toBe(422);
      expect(String(answer.json.error)).toMatch(/callback_url host .* is not in CALLBACK_ALLOWED_HOSTS/);
      expect((answer.json.errors as Array<{ field: string }>)[0]?.field).toBe('callback_url');
    }
    expect(await messageCount()).toBe(rowsBefore);
    expect(env.sandbox.calls().length).toBe(callsBefore);
  });

  it('never delay or repeat a send: sends go out at once while every callback hangs', async () => {
    receiver.setAlways('/stuck', 'hang');
    try {
      const started = Date.now();
      const answers = await Promise.all([0, 1, 2].map((n) => send({ callback_url: receiver.url('/stuck'), custom_id: `stuck-${n}` })));
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200]);
      expect(Date.now() - started).toBeLessThan(3_000);
      // The callbacks keep being attempted meanwhile, and never cause a send again.
      await eventually(() => (receiver.at('/stuck').length >= 6 ? true : undefined), 20_000);
      const refs = await sql<{ provider_ref: string }>`SELECT provider_ref FROM user_sms_send WHERE id IN (${sql.join(answers.map((a) => String(a.json.id)))})`.execute(env.db);
      for (const { provider_ref } of refs.rows) expect(env.sandbox.acceptedSends().filter((c) => c.customId === provider_ref)).toHaveLength(1);
    } finally {
      receiver.setAlways('/stuck', 'ok');
    }
  });

  it('put no phone, text or key in any callback body or log line', () => {
    // After everything above (successes, failures, retries of every kind).
    const digits = PHONE.slice(1);
    const bodies = receiver.received.map((r) => r.body + JSON.stringify(r.headers));
    const logs = env.logLines().filter((line) => /callback/i.test(line));
    expect(logs.length).toBeGreaterThan(0);
    for (const text of [...bodies, ...env.logLines()]) {
      expect(text).not.toContain(digits);
      expect(text).not.toContain(sandboxTriggers.invalidNumber);
      expect(text).not.toContain(TEXT);
      expect(text).not.toContain(DEMO_KEY);
      expect(text).not.toContain(SECRET.slice('whsec_'.length));
    }
  });
});

describe('callbacks whose receiver stays down longer than the retry window', () => {
  let short: TestEnv;
  let shortApi: string;

  beforeAll(async () => {
    short = await createTestEnv({
      CALLBACK_ALLOWED_HOSTS: '127.0.0.1',
      CALLBACK_SIGNING_SECRET: SECRET,
      CALLBACK_RETRY_BACKOFF_MS: '100',
      CALLBACK_RETRY_FOR_S: '2',
      CALLBACK_TIMEOUT_MS: '400',
    // Many messages of one enterprise: its rate limit is not what these tests are about.
    RATE_LIMIT_PER_WINDOW: '1000',
    });
    await short.seedEnterprise({ number: '0367', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    shortApi = (await short.startService({ workers: 1 })).api!.url;
  });

  afterAll(async () => {
    await short?.cleanup();
  });

  it('end in given up, visible in /metrics and npm run jobs, and are delivered with the same webhook-id when an operator retries them', async () => {
    receiver.setAlways('/down', 'unavailable');
    const sent = await postJson(shortApi, '/send', { enterprise_number: '0367', phone: PHONE, text: TEXT, callback_url: receiver.url('/down') });
    expect(sent.status, sent.text).toBe(200);
    const id = sent.json.id as number;
    const [row] = await eventually(async () => {
      const rows = await sql<{ id: string; status: string; attempts: number; webhook_id: string }>`
        SELECT id, status, attempts, webhook_id FROM callback_events WHERE message_id = ${String(id)}`.execute(short.db);
      return rows.rows[0]?.status === 'given_up' ? rows.rows : undefined;
    }, 20_000);
    const eventId = Number(row!.id);
    expect(row!.attempts).toBeGreaterThanOrEqual(3);
    expect(new Set(receiver.at('/down').map((r) => r.headers['webhook-id']))).toEqual(new Set([row!.webhook_id]));

    // Counters are written folded, once a second.
    const metrics = await eventually(async () => {
      const text = await fetch(`${shortApi}/metrics`).then((r) => r.text());
      return /^user_sms_callbacks_given_up_total\{type="message\.sent"\} 1$/m.test(text) ? text : undefined;
    });
    expect(Number(/^user_sms_callback_failed_attempts_total\{type="message\.sent"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(3);
    expect(metrics).toMatch(/^user_sms_callback_events\{state="given_up"\} 1$/m);

    const listed = await runCli(short, 'jobs', ['callbacks', '--json']);
    expect(listed.code, listed.stderr).toBe(0);
    const events = JSON.parse(listed.stdout) as Array<Record<string, unknown>>;
    expect(events).toEqual([expect.objectContaining({ event_id: eventId, message_id: id, type: 'message.sent', state: 'given_up', webhook_id: row!.webhook_id })]);
    const table = await runCli(short, 'jobs', ['callbacks']);
    expect(table.stdout).toMatch(/given_up/);
    expect(table.all).not.toContain(TEXT);

    // The receiver is back; the operator retries it.
    receiver.setAlways('/down', undefined);
    const retried = await runCli(short, 'jobs', ['retry-callback', String(eventId)]);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toMatch(/retried/);
    const ok = await eventually(() => receiver.at('/down').find((r) => r.answered === 'ok'), 20_000);
    expect(ok.headers['webhook-id']).toBe(row!.webhook_id);
    expect(ok.verified).toBe(true);
    await eventually(async () => {
      const r = await sql<{ status: string }>`SELECT status FROM callback_events WHERE id = ${String(eventId)}`.execute(short.db);
      return r.rows[0]?.status === 'delivered' ? true : undefined;
    });
    const again = await runCli(short, 'jobs', ['retry-callback', String(eventId)]);
    expect(again.code).toBe(6);
    expect((await runCli(short, 'jobs', ['retry-callback', '999999'])).code).toBe(1);
  });

  it('end in given up when nothing listens at all', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const sent = await postJson(shortApi, '/send', { enterprise_number: '0367', phone: PHONE, text: TEXT, callback_url: `http://127.0.0.1:${port}/gone` });
    expect(sent.status).toBe(200);
    const row = await eventually(async () => {
      const rows = await sql<{ status: string; last_error: string }>`SELECT status, last_error FROM callback_events WHERE message_id = ${String(sent.json.id)}`.execute(short.db);
      return rows.rows[0]?.status === 'given_up' ? rows.rows[0] : undefined;
    }, 20_000);
    expect(row.last_error).toMatch(/ECONNREFUSED/);
  });
});
