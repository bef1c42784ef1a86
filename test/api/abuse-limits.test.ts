import { createHash } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { errorHandler } from '../../src/api/errors.ts';
import { requestRateLimit } from '../../src/api/request-rate-limit.ts';
import { startApi, type RunningApi } from '../../src/roles.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, postJson, type TestEnv } from '../support/context.ts';
import { scanKeys } from '../support/test-redis.ts';

// Abuse limits through the real HTTP server, PostgreSQL, Redis and the WebSMS sandbox: the request
// body limit, the per-caller request rate limit (shared by API processes through Redis) and the daily
// cap of messages per enterprise.

const PHONE = '+375296254070';
const CONFIGURED = `${DEMO_USER} ${DEMO_KEY}`;
const sha = (token: string) => createHash('sha256').update(token).digest('hex');
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

describe('request rate limit (REQUEST_RATE_LIMIT_PER_WINDOW=5 per 60 s)', () => {
  let env: TestEnv;
  let first: RunningApi;
  let second: RunningApi;

  beforeAll(async () => {
    // 60 s: no window can end during the test, so the counts below are exact.
    env = await createTestEnv({
      REQUEST_RATE_LIMIT_PER_WINDOW: '5',
      REQUEST_RATE_LIMIT_WINDOW_MS: '60000',
      BODY_LIMIT_BYTES: '2048',
      API_TOKENS: ['flood', 'steady', 'split'].map((name) => `${name}:${sha(`${name}-token`)}:*`).join(';'),
    });
    await env.seedEnterprise({ number: '0367', customDomain: CONFIGURED });
    first = (await env.startService({ workers: 1 })).api!;
    // A second API process (own Express app, own Redis connection), sharing Redis with the first.
    second = await startApi(env.config, env.logger);
  });

  afterAll(async () => {
    await second?.stop();
    await env?.cleanup();
  });

  it('answers the sixth request in a window with 429, Retry-After and the envelope; other callers are unaffected', async () => {
    for (let i = 0; i < 5; i += 1) {
      expect((await fetch(`${first.url}/messages/1`, { headers: bearer('flood-token') })).status).toBe(404);
    }
    const limited = await fetch(`${first.url}/messages/1`, { headers: bearer('flood-token') });
    expect(limited.status).toBe(429);
    const retryAfter = Number(limited.headers.get('retry-after'));
    expect(Number.isInteger(retryAfter)).toBe(true);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    const body = (await limited.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ success: false, message_id: null, price: null, parts: null, amount: null, custom_id: null });
    expect(body.error).toMatch(/Too many requests/);
    expect(body.detail).toBe(body.error);

    // POST /send is counted too, and refused before anything is recorded or sent.
    const send = await postJson(first.url, '/send', { enterprise_number: '0367', phone: PHONE, text: 'flooded' }, bearer('flood-token'));
    expect(send.status).toBe(429);
    expect(env.sandbox.calls().some((c) => c.text === 'flooded')).toBe(false);
    expect(await env.db.selectFrom('user_sms_send').select('id').where('text', '=', 'flooded').execute()).toHaveLength(0);

    expect((await fetch(`${first.url}/messages/1`, { headers: bearer('steady-token') })).status).toBe(404);
  });

  it('counts a caller across two API processes together', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 6; i += 1) {
      const url = i % 2 === 0 ? first.url : second.url;
      statuses.push((await fetch(`${url}/messages/1`, { headers: bearer('split-token') })).status);
    }
    expect(statuses).toEqual([404, 404, 404, 404, 404, 429]);
  });

  it('counts requests without a valid token by client address (401s included), and never limits /health or /', async () => {
    const statuses: number[] = [];
    for (let i = 0; i < 6; i += 1) statuses.push((await fetch(`${first.url}/messages/1`, { headers: bearer('wrong') })).status);
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429]);
    for (let i = 0; i < 10; i += 1) {
      expect((await fetch(`${first.url}/health`)).status).toBe(200);
      expect((await fetch(`${first.url}/`)).status).toBe(200);
    }
  });

  it('keeps one expiring Redis key per caller under the queue prefix', async () => {
    const keys = await scanKeys(env.redis, `${env.config.queuePrefix}:http-rate:*`);
    expect(keys.sort()).toEqual(
      [`token:flood`, `token:split`, `token:steady`, 'ip:127.0.0.1'].map((k) => `${env.config.queuePrefix}:http-rate:${k}`).sort(),
    );
    for (const key of keys) {
      const ttl = await env.redis.pttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(60_000);
    }
  });

  it('lets requests through (and logs it) when Redis cannot count them', async () => {
    const app = express();
    app.use(requestRateLimit({ hit: () => Promise.reject(new Error('Connection is closed.')) }, env.logger));
    app.get('/messages/1', (_req, res) => {
      res.json({ ok: true });
    });
    app.use(errorHandler(env.logger));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      expect((await fetch(`http://127.0.0.1:${port}/messages/1`)).status).toBe(200);
      expect((await fetch(`http://127.0.0.1:${port}/messages/1`)).status).toBe(200);
    } finally {
      server.close();
    }
    const warnings = env.logLines().filter((line) => line.includes('request rate limit unavailable'));
    expect(warnings).toHaveLength(1); // at most one line per 10 s, not one per request
  });

  it('refuses a body over BODY_LIMIT_BYTES with 413 and the envelope, and takes one at the limit', async () => {
    const unlimited = bearer('steady-token'); // 'steady' has made one request so far
    const padding = (size: number) => {
      const base = JSON.stringify({ enterprise_number: '0367', phone: PHONE, text: '' });
      return JSON.stringify({ enterprise_number: '0367', phone: PHONE, text: 'x'.repeat(size - base.length) });
    };
    expect(Buffer.byteLength(padding(2048))).toBe(2048);
    const over = await postJson(first.url, '/send', padding(2049), unlimited);
    expect(over.status).toBe(413);
    expect(over.json).toMatchObject({ success: false, error: 'Request body too large' });
    const at = await postJson(first.url, '/send', padding(2048), unlimited);
    expect(at.status).toBe(422); // parsed: the text is over 1000 characters, and the answer says so
    expect(at.json.error).toContain('text');
  });
});

describe('daily cap (DAILY_CAP_PER_ENTERPRISE=3)', () => {
  let env: TestEnv;
  let first: RunningApi;
  let second: RunningApi;
  const acceptedToday = async (enterprise: string) =>
    Number(
      (
        await sql<{ n: string }>`SELECT count(*) AS n FROM user_sms_send
          WHERE enterprise_number = ${enterprise} AND created_at >= CURRENT_DATE AND error_code IS DISTINCT FROM 'daily_cap'`.execute(env.db)
      ).rows[0]!.n,
    );

  beforeAll(async () => {
    env = await createTestEnv({ RATE_LIMIT_PER_WINDOW: '1000', DAILY_CAP_PER_ENTERPRISE: '3' });
    await env.seedEnterprise({ number: '0367', customDomain: CONFIGURED });
    await env.seedEnterprise({ number: '0368', customDomain: CONFIGURED });
    await env.seedEnterprise({ number: '0369', customDomain: CONFIGURED });
    first = (await env.startService({ workers: 1 })).api!;
    second = await startApi(env.config, env.logger);
  });

  afterAll(async () => {
    await second?.stop();
    await env?.cleanup();
  });

  it('admits exactly 3 of a burst of 16 parallel sends through two API processes; the rest get 429 and a failed daily_cap row', async () => {
    const answers = await Promise.all(
      Array.from({ length: 16 }, (_, i) =>
        postJson(i % 2 === 0 ? first.url : second.url, '/send', { enterprise_number: '0367', phone: PHONE, text: `burst ${i}` }, { prefer: 'respond-async' }),
      ),
    );
    const admitted = answers.filter((a) => a.status === 202 || a.status === 200);
    const refused = answers.filter((a) => a.status === 429);
    expect(admitted).toHaveLength(3);
    expect(refused).toHaveLength(13);
    for (const answer of refused) {
      expect(answer.json).toMatchObject({ success: false, message_id: null, status: 'failed' });
      expect(answer.json.error).toMatch(/^Daily limit reached: enterprise 0367 may send at most 3 messages per day/);
      expect(answer.json.detail).toBe(answer.json.error);
      const retryAfter = Number(answer.headers.get('retry-after'));
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(86_400 + 3_600); // the rest of today (a DST day has 25 h)
    }
    const refusedRows = await env.db.selectFrom('user_sms_send').selectAll().where('error_code', '=', 'daily_cap').execute();
    expect(refusedRows).toHaveLength(13);
    expect(refusedRows.every((r) => r.status === 'failed' && r.enterprise_number === '0367' && r.error_message?.startsWith('Daily limit'))).toBe(true);
    expect(await acceptedToday('0367')).toBe(3);

    // Only the admitted three reach WebSMS, once each.
    const admittedTexts = new Set((await env.db.selectFrom('user_sms_send').select('text').where('enterprise_number', '=', '0367').where('error_code', 'is', null).execute()).map((r) => r.text));
    await expect.poll(() => env.sandbox.acceptedSends().filter((c) => c.text?.startsWith('burst ')).length, { timeout: 10_000 }).toBe(3);
    expect(new Set(env.sandbox.acceptedSends().filter((c) => c.text?.startsWith('burst ')).map((c) => c.text))).toEqual(admittedTexts);
  });

  it('does not count refusals: the enterprise stays at 3 however often it is refused', async () => {
    for (let i = 0; i < 3; i += 1) {
      expect((await postJson(first.url, '/send', { enterprise_number: '0367', phone: PHONE, text: `again ${i}` })).status).toBe(429);
    }
    expect(await acceptedToday('0367')).toBe(3);
  });

  it('leaves other enterprises alone', async () => {
    const { status, json } = await postJson(first.url, '/send', { enterprise_number: '0368', phone: PHONE, text: 'other enterprise' });
    expect(status).toBe(200);
    expect(json.success).toBe(true);
  });

  it('answers a repeat of an admitted message (same Idempotency-Key) at the cap, instead of refusing it', async () => {
    const body = { enterprise_number: '0369', phone: PHONE, text: 'keyed at cap' };
    const firstAnswer = await postJson(first.url, '/send', body, { 'idempotency-key': 'cap-key' });
    for (let i = 0; i < 2; i += 1) await postJson(first.url, '/send', { ...body, text: `fill ${i}` });
    expect((await postJson(first.url, '/send', { ...body, text: 'over' })).status).toBe(429);
    const repeat = await postJson(second.url, '/send', body, { 'idempotency-key': 'cap-key' });
    expect(repeat.status).toBe(200);
    expect(repeat.json.id).toBe(firstAnswer.json.id);
  });

  it("counts today only: yesterday's messages leave room for today's", async () => {
    await sql`UPDATE user_sms_send SET created_at = created_at - interval '1 day' WHERE enterprise_number = '0367'`.execute(env.db);
    const { status } = await postJson(first.url, '/send', { enterprise_number: '0367', phone: PHONE, text: 'a new day' });
    expect(status).toBe(200);
    expect(await acceptedToday('0367')).toBe(1);
  });
});
