import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, DEMO_KEY, DEMO_USER, postJson, type TestEnv } from '../support/context.ts';

// Caller authentication (API_TOKENS) through the real HTTP server, PostgreSQL, Redis, a worker and the
// WebSMS sandbox. Two callers: `crm`, limited to enterprise 0367, and `billing`, allowed every enterprise.

const PHONE = '+375296254070';
const CRM_TOKEN = 'crm-token-0Jx8l2V3m7Qw9Zr4Tn6Yp1Ks5';
const BILLING_TOKEN = 'billing-token-Hq3Wv8Nd2Lc7Xf1Rb6Mj9Pt4';
const sha = (token: string) => createHash('sha256').update(token).digest('hex');
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const CONFIGURED = `${DEMO_USER} ${DEMO_KEY}`;

/** As if relayed by a proxy from a client elsewhere: not a direct local peer, so not the operator. */
const REMOTE = { 'x-forwarded-for': '203.0.113.7' };

let env: TestEnv;
let baseUrl: string;
const get = (path: string, headers: Record<string, string> = {}) => fetch(`${baseUrl}${path}`, { headers });
const send = (body: unknown, headers: Record<string, string> = {}) => postJson(baseUrl, '/send', body, headers);
const rows = () => env.db.selectFrom('user_sms_send').selectAll().orderBy('id').execute();

beforeAll(async () => {
  env = await createTestEnv({ RATE_LIMIT_PER_WINDOW: '1000', API_TOKENS: `crm:${sha(CRM_TOKEN)}:0367; billing:${sha(BILLING_TOKEN)}:*` });
  await env.seedEnterprise({ number: '0367', name: 'june', customDomain: CONFIGURED });
  await env.seedEnterprise({ number: '0368', name: 'secret-tenant', customDomain: CONFIGURED });
  const { api } = await env.startService({ workers: 1 });
  baseUrl = api!.url;
});

afterAll(async () => {
  await env?.cleanup();
});

describe('with API_TOKENS configured', () => {
  it.each([
    ['no Authorization header', {}, 'Bearer realm="user-sms"'],
    ['an unknown token', bearer('not-a-token'), 'Bearer realm="user-sms", error="invalid_token"'],
    ['the token hash instead of the token', bearer(sha(CRM_TOKEN)), 'Bearer realm="user-sms", error="invalid_token"'],
    ['Basic credentials', { authorization: `Basic ${Buffer.from(`crm:${CRM_TOKEN}`).toString('base64')}` }, 'Bearer realm="user-sms"'],
  ])('POST /send with %s answers 401 with the envelope and a Bearer challenge, and records and sends nothing', async (_case, headers, challenge) => {
    const before = (await rows()).length;
    const text = `unauthenticated ${Math.random()}`;
    const { status, json, headers: answer } = await send({ enterprise_number: '0367', phone: PHONE, text }, headers);
    expect(status).toBe(401);
    expect(answer.get('www-authenticate')).toBe(challenge);
    expect(json).toMatchObject({ success: false, message_id: null, price: null, parts: null, amount: null, custom_id: null });
    expect(json.error).toMatch(/token|Authentication/);
    expect(json.detail).toBe(json.error);
    expect((await rows()).length).toBe(before);
    expect(env.sandbox.calls().some((c) => c.text === text)).toBe(false);
  });

  it('sends for an allowed enterprise and records the token name as service_name, whatever X-Service-Name claims', async () => {
    const { status, json } = await send({ enterprise_number: '0367', phone: PHONE, text: 'from crm' }, { ...bearer(CRM_TOKEN), 'x-service-name': 'billing' });
    expect(status).toBe(200);
    expect(json.success).toBe(true);
    const row = await env.db.selectFrom('user_sms_send').selectAll().where('id', '=', String(json.id)).executeTakeFirstOrThrow();
    expect(row.service_name).toBe('crm');
  });

  it('answers a caller limited to other enterprises exactly as for an unknown enterprise, records the probe without the name, sends nothing', async () => {
    const text = `probe ${Math.random()}`;
    const forbidden = await send({ enterprise_number: '0368', phone: PHONE, text, custom_id: 'p1' }, bearer(CRM_TOKEN));
    const unknown = await send({ enterprise_number: '0999', phone: PHONE, text, custom_id: 'p1' }, bearer(CRM_TOKEN));
    expect(forbidden.status).toBe(404);
    expect(unknown.status).toBe(404);
    expect(forbidden.json.error).toBe('Enterprise 0368 not found or has no WebSMS configuration');
    const shape = (json: Record<string, unknown>) => ({ ...json, id: 'ID', error: String(json.error).replace(/\d{4}/, 'NNNN'), detail: String(json.detail).replace(/\d{4}/, 'NNNN') });
    expect(shape(forbidden.json)).toEqual(shape(unknown.json));
    expect([...forbidden.headers.keys()].sort()).toEqual([...unknown.headers.keys()].sort());

    const row = await env.db.selectFrom('user_sms_send').selectAll().where('id', '=', String(forbidden.json.id)).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ enterprise_number: '0368', enterprise_name: null, status: 'failed', service_name: 'crm', error_code: 'enterprise_not_allowed' });
    expect(row.error_message).toContain('not found');
    expect(JSON.stringify(row)).not.toContain('secret-tenant');
    expect(env.sandbox.calls().some((c) => c.text === text)).toBe(false);
  });

  it('lets a caller allowed every enterprise send for any of them', async () => {
    const { status, json } = await send({ enterprise_number: '0368', phone: PHONE, text: 'from billing' }, bearer(BILLING_TOKEN));
    expect(status).toBe(200);
    expect(json.success).toBe(true);
  });

  it('GET /messages/{id}: 404 without a token or key (as for a missing one), 200 with its status link, for its own enterprise\'s token, and 404 for another enterprise\'s', async () => {
    const own = await send({ enterprise_number: '0367', phone: PHONE, text: 'own' }, bearer(CRM_TOKEN));
    const foreign = await send({ enterprise_number: '0368', phone: PHONE, text: 'foreign' }, bearer(BILLING_TOKEN));

    const anonymous = await get(`/messages/${String(own.json.id)}`, REMOTE);
    expect(anonymous.status).toBe(404);
    expect(((await anonymous.json()) as { error: string }).error).toBe(`Message ${String(own.json.id)} not found`);
    expect((await get(String(own.json.status_url), REMOTE)).status).toBe(200);

    expect((await get(`/messages/${String(own.json.id)}`, { ...REMOTE, ...bearer(CRM_TOKEN) })).status).toBe(200);
    const hidden = await get(`/messages/${String(foreign.json.id)}`, { ...REMOTE, ...bearer(CRM_TOKEN) });
    const missing = await get('/messages/987654321', { ...REMOTE, ...bearer(CRM_TOKEN) });
    expect(hidden.status).toBe(404);
    expect(missing.status).toBe(404);
    expect(((await hidden.json()) as { error: string }).error).toBe(`Message ${String(foreign.json.id)} not found`);
    expect(((await missing.json()) as { error: string }).error).toBe('Message 987654321 not found');
    expect((await get(`/messages/${String(foreign.json.id)}`, { ...REMOTE, ...bearer(BILLING_TOKEN) })).status).toBe(200);
  });

  it('GET /enterprises/{n}/balance: 401 without a token, 404 with the unknown-enterprise text for a foreign enterprise, 200 without the WebSMS user for its own', async () => {
    const anonymous = await get('/enterprises/0367/balance', REMOTE);
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get('www-authenticate')).toBe('Bearer realm="user-sms"');
    const own = await get('/enterprises/0367/balance', { ...REMOTE, ...bearer(CRM_TOKEN) });
    expect(own.status).toBe(200);
    const body = (await own.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ enterprise_number: '0367', sms: 39.056508 });
    expect(body).not.toHaveProperty('websms_user');
    expect(JSON.stringify(body)).not.toContain(DEMO_USER);
    const foreign = await get('/enterprises/0368/balance', { ...REMOTE, ...bearer(CRM_TOKEN) });
    const unknown = await get('/enterprises/0999/balance', { ...REMOTE, ...bearer(CRM_TOKEN) });
    expect(foreign.status).toBe(404);
    expect(unknown.status).toBe(404);
    expect(((await foreign.json()) as { error: string }).error).toBe('Enterprise 0368 not found or has no WebSMS configuration');
    expect((await get('/enterprises/0368/balance', { ...REMOTE, ...bearer(BILLING_TOKEN) })).status).toBe(200);
  });

  it('GET /reports/*: for operators only; a token does not open them, and through a proxy they do not exist', async () => {
    for (const headers of [REMOTE, { ...REMOTE, ...bearer(CRM_TOKEN) }, { ...REMOTE, ...bearer(BILLING_TOKEN) }]) {
      expect((await get('/reports', headers)).status).toBe(404);
      expect((await get('/reports/recent?enterprise=0367', headers)).status).toBe(404);
    }
    // The operator, without configured credentials: a direct local peer.
    expect((await get('/reports/recent?enterprise=0367')).status).toBe(200);
  });

  it('keeps /, /health, /docs and /openapi.json open, and never asks for a Bearer token on /metrics or /admin', async () => {
    for (const path of ['/', '/health', '/docs/', '/openapi.json']) {
      expect((await get(path, REMOTE)).status, path).toBe(200);
    }
    for (const path of ['/metrics', '/admin/queues']) {
      const response = await get(path, REMOTE);
      expect(response.status, path).toBe(404);
      expect(response.headers.get('www-authenticate') ?? '', path).not.toContain('Bearer');
    }
  });

  it('answers any other path with 404, with a token or without', async () => {
    expect((await get('/nope', REMOTE)).status).toBe(404);
    expect((await get('/nope', { ...REMOTE, ...bearer(CRM_TOKEN) })).status).toBe(404);
  });
});

describe('with API_TOKENS and operator credentials both configured', () => {
  let both: TestEnv;
  let url: string;
  const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });

  beforeAll(async () => {
    both = await createTestEnv({ API_TOKENS: `crm:${sha(CRM_TOKEN)}:0367`, ADMIN_USER: 'ops', ADMIN_PASSWORD: 'ops-password-1' });
    await both.seedEnterprise({ number: '0367', customDomain: CONFIGURED });
    const { api } = await both.startService({ workers: 1 });
    url = api!.url;
  });

  afterAll(async () => {
    await both?.cleanup();
  });

  it('lets operators read reports with their Basic credentials, and refuses wrong ones', async () => {
    expect((await fetch(`${url}/reports`, { headers: basic('ops', 'ops-password-1') })).status).toBe(200);
    expect((await fetch(`${url}/reports`, { headers: basic('ops', 'wrong-password') })).status).toBe(401);
  });

  it('never lets Basic credentials stand in for a token on POST /send; operators may read any message', async () => {
    const sent = await postJson(url, '/send', { enterprise_number: '0367', phone: PHONE, text: 'basic' }, basic('ops', 'ops-password-1'));
    expect(sent.status).toBe(401);
    const own = await postJson(url, '/send', { enterprise_number: '0367', phone: PHONE, text: 'for the operator' }, { authorization: `Bearer ${CRM_TOKEN}` });
    expect((await fetch(`${url}/messages/${String(own.json.id)}`, { headers: basic('ops', 'ops-password-1') })).status).toBe(200);
    expect((await fetch(`${url}/messages/${String(own.json.id)}`, { headers: basic('ops', 'wrong-password') })).status).toBe(401);
    // With operator credentials configured, even a local peer needs them.
    expect((await fetch(`${url}/messages/${String(own.json.id)}`)).status).toBe(404);
    expect((await fetch(`${url}/reports`)).status).toBe(401);
  });
});
