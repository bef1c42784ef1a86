import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { networkInterfaces } from 'node:os';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningApi } from '../../src/roles.ts';
import { startApi } from '../../src/roles.ts';
import { jobIdFor, SEND_QUEUE } from '../../src/queue/jobs.ts';
import { REPORTS } from '../../src/reports/catalogue.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';
import { findTool, startNginx, type RunningNginx } from '../support/nginx.ts';

// The service as an attacker on the internet meets it: anonymously, directly from another host and
// through the shipped nginx snippet, with every route and method, enumerated ids, other messages'
// keys, spoofed proxy headers and path tricks. Then with a token and with the operator's credentials,
// each caller seeing exactly what it may. "From another host" is this machine's own non-loopback
// address: to the service, a peer that is not local.

const PHONE = '+375296254070';
const SECRET_TEXT = 'Your one-time code is 4711-SECRET, valid for 5 minutes; do not share it with anyone, ever.';
const CRM_TOKEN = 'crm-token-Zr4Tn6Yp1Ks50Jx8l2V3m7Qw9';
const ADMIN = { user: 'ops', password: 'operator-pass-1' };
const sha = (value: string) => createHash('sha256').update(value).digest('hex');
const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });

const externalAddress = Object.values(networkInterfaces())
  .flat()
  .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
const nginx = findTool('nginx');
const missing = [!externalAddress && 'a non-loopback IPv4 address', !nginx && 'nginx (apt-get install nginx-light)'].filter(Boolean).join(', ');
if (missing && !process.env.CI) console.warn(`skipped: the attacker suite needs ${missing}`);
// In CI nothing may skip: a missing piece fails the suite instead (.ci/run installs nginx).
const describeAttack = missing && !process.env.CI ? describe.skip : describe;

interface Answer {
  status: number;
  text: string;
  headers: Headers;
}

async function call(url: string, init: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<Answer> {
  const response = await fetch(url, { method: init.method ?? 'GET', headers: init.headers, body: init.body, redirect: 'manual' });
  return { status: response.status, text: await response.text(), headers: response.headers };
}

/** A raw request with the path exactly as written (fetch would normalise `..`, `//` and `%2e`). */
function rawGet(base: string, path: string, method = 'GET', headers: Record<string, string> = {}): Promise<Answer> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: hostname, port, path, method, headers }, (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => (text += chunk.toString('utf8')));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text, headers: new Headers(res.headers as Record<string, string>) }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Nothing an anonymous client gets back may carry a stored text, a WebSMS login or key. */
function expectNothingSecret(answer: Answer, label: string) {
  for (const secret of [SECRET_TEXT.slice(0, 30), '4711-SECRET', DEMO_USER, DEMO_KEY, encodeURIComponent(DEMO_KEY)]) {
    expect(answer.text, `${label} leaks ${secret}`).not.toContain(secret);
  }
}

/**
 * Every operator surface the app serves, as an operator reads it with GET (src/app.ts guards
 * /reports, /metrics, /admin and /enterprises): the report catalogue and each report
 * (reports/catalogue.ts), the balance, the metrics, the queue dashboard (bull-board on /admin/queues,
 * its page, its API and one job), and the message console (search, stylesheet, one message).
 * `id`: a real message.
 */
const operatorPaths = (id: number) => [
  '/reports',
  '/reports/today',
  '/reports/enterprise?enterprise=0367',
  '/reports/recent',
  '/reports/failures',
  '/reports/spend',
  '/reports/delivery',
  '/reports/undelivered',
  '/reports/audit',
  '/enterprises/0367/balance',
  '/metrics',
  '/admin/queues',
  '/admin/queues/api/queues',
  `/admin/queues/api/queues/${SEND_QUEUE}/${jobIdFor(id)}`,
  '/admin/messages',
  '/admin/messages?enterprise=0367',
  '/admin/messages/console.css',
  `/admin/messages/${id}`,
];

/** The operator surfaces' writes: the message console's cancel and retry, and a dashboard action. */
const operatorWrites = (id: number) =>
  [
    ['POST', `/admin/messages/${id}/cancel`],
    ['POST', `/admin/messages/${id}/retry`],
    ['PUT', `/admin/queues/api/queues/${SEND_QUEUE}/pause`],
  ] as const;

/** Everything above, for the checks that try every method on every path. */
const everyOperatorPath = (id: number) => [...operatorPaths(id), ...operatorWrites(id).map(([, path]) => path)];

/** What a change to a message would touch: its status, its failure, the operators' record of it. */
const rowOf = (env: TestEnv, id: number) =>
  env.db.selectFrom('user_sms_send').select(['status', 'error_code', 'error_message', 'attempts', 'operator_actions']).where('id', '=', String(id)).executeTakeFirstOrThrow();

/** The bodies of two 404s compared with the requested id taken out. */
const notFoundShape = (answer: Answer, id: number | string) => ({
  status: answer.status,
  type: answer.headers.get('content-type'),
  body: answer.text.replaceAll(String(id), 'N'),
});

/** nginx's own 404 for what it does not publish (ops/nginx/user-sms.conf), not the service's. */
function expectNginxNotFound(answer: Answer, label: string) {
  expect(answer.status, label).toBe(404);
  expect(JSON.parse(answer.text), label).toMatchObject({ success: false, error: 'Not found', detail: 'Not found' });
  expect(answer.headers.get('www-authenticate'), label).toBeNull();
}

const PATH_TRICKS = [
  '//reports/recent',
  '/./reports/recent',
  '/%2e/reports/recent',
  '/messages/%2e%2e/reports/recent',
  '/messages/1/../../reports/recent',
  '/REPORTS/recent',
  '/Reports/Recent',
  '/reports./recent',
  '/reports/recent.',
  '/reports%2Frecent',
  '/reports/recent/',
  '/metrics.',
  '/METRICS',
  '/admin//queues',
  '/admin/queues/../../metrics',
  '/enterprises/0367/balance/',
  '/enterprises/0367%2Fbalance',
  '/send/../reports/recent',
  '/health/../reports/recent',
  '/docs/../reports/recent',
];

const SPOOFED = [
  { 'x-real-ip': '127.0.0.1' },
  { 'x-forwarded-for': '127.0.0.1' },
  { forwarded: 'for=127.0.0.1' },
  { 'x-forwarded-for': '127.0.0.1', 'x-real-ip': '127.0.0.1', forwarded: 'for="[::1]"' },
];

describeAttack('an anonymous client, with the shipped defaults (no API_TOKENS, no ADMIN_USER) and a writable console and dashboard', () => {
  let env: TestEnv;
  let api: RunningApi;
  let front: RunningNginx;
  /** the service as another host reaches it */
  let outside: string;
  /** the service as a process on this host reaches it */
  let local: string;
  let sent: { id: number; status_url: string };
  let queued: { id: number; status_url: string };
  /** a message in line, which the console's cancel and retry (and DELETE) would change */
  let target: { id: number; status_url: string };

  beforeAll(async () => {
    // One SMS an hour: every message after the first waits in line for the whole run, so it can
    // still be cancelled. The console and the dashboard may act (DASHBOARD_READ_ONLY=false), so that
    // nothing but the operator guard stands between an anonymous write and its effect.
    env = await createTestEnv({ HOST: '0.0.0.0', RATE_LIMIT_PER_WINDOW: '1', RATE_LIMIT_WINDOW_MS: '3600000', DASHBOARD_READ_ONLY: 'false' });
    await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    api = (await env.startService({ workers: 1 })).api!;
    const port = new URL(api.url).port;
    outside = `http://${externalAddress!}:${port}`;
    local = `http://127.0.0.1:${port}`;
    front = await startNginx(nginx!, Number(port));
    const first = await postJson(outside, '/send', { enterprise_number: '0367', phone: PHONE, text: SECRET_TEXT });
    expect(first.status).toBe(200);
    sent = first.json as typeof sent;
    const second = await postJson(outside, '/send', { enterprise_number: '0367', phone: PHONE, text: `${SECRET_TEXT} (2)` }, { prefer: 'respond-async' });
    expect(second.status).toBe(202);
    queued = second.json as typeof queued;
    const third = await postJson(outside, '/send', { enterprise_number: '0367', phone: PHONE, text: `${SECRET_TEXT} (3)` }, { prefer: 'respond-async' });
    expect(third.status).toBe(202);
    target = third.json as typeof target;
    // Both wait in line (queued, their jobs delayed) before anything is tried on them.
    for (const { id } of [queued, target]) await eventually(async () => ((await rowOf(env, id)).status === 'queued' ? true : undefined));
  });

  /** The queue as the operator on the host sees it in the dashboard: paused or not. */
  const queuePaused = async () => {
    const board = JSON.parse((await call(`${local}/admin/queues/api/queues`)).text) as { queues: { name: string; isPaused: boolean }[] };
    return board.queues.find((q) => q.name === SEND_QUEUE)!.isPaused;
  };

  afterAll(async () => {
    await front?.stop();
    await env?.cleanup();
  });

  const bases = () => [
    ['directly', outside, (path: string) => `${outside}${path}`],
    ['through nginx', front.url(''), (path: string) => front.url(path)],
  ] as const;

  it('reaches the old surface, directly and through nginx: /, /health, /docs, the OpenAPI document, POST /send', async () => {
    for (const [how, , url] of bases()) {
      for (const path of ['/', '/health', '/docs/', '/openapi.json']) {
        const answer = await call(url(path));
        expect(answer.status, `${how} ${path}`).toBe(200);
        expectNothingSecret(answer, `${how} ${path}`);
      }
    }
    const viaNginx = await postJson(front.url(''), '/send', { enterprise_number: '0367', phone: PHONE, text: 'via nginx' }, { prefer: 'respond-async' });
    expect(viaNginx.status).toBe(202);
    expect(viaNginx.json.status_url).toMatch(/^\/messages\/\d+\?key=[\w-]{32}$/);
  });

  it('finds no operator surface, directly or through nginx, with any method, even with spoofed proxy headers; its writes change nothing', async () => {
    const before = await rowOf(env, target.id);
    for (const [how, , url] of bases()) {
      for (const path of everyOperatorPath(target.id)) {
        for (const method of ['GET', 'HEAD', 'OPTIONS', 'POST', 'PUT', 'DELETE']) {
          for (const headers of [{}, ...SPOOFED, basic(ADMIN.user, ADMIN.password)]) {
            const answer = await call(url(path), { method, headers });
            expect(answer.status, `${how} ${method} ${path} ${JSON.stringify(headers)}`).toBe(404);
            expectNothingSecret(answer, `${how} ${method} ${path}`);
          }
        }
      }
    }
    // The console's cancel and retry were tried on a message in line: it is as it was, and the queue runs.
    expect(await rowOf(env, target.id)).toEqual(before);
    expect(before).toMatchObject({ status: 'queued', operator_actions: [] });
    expect(await queuePaused()).toBe(false);
  });

  it('gets nothing through path tricks: encoded dots and slashes, doubled slashes, letter case, trailing dots', async () => {
    for (const [how, base] of bases()) {
      const prefix = how === 'through nginx' ? '/api/user-sms' : '';
      for (const trick of PATH_TRICKS) {
        const host = base.replace(/\/api\/user-sms$/, '');
        const answer = await rawGet(host, `${prefix}${trick}`);
        const label = `${how} GET ${trick}: ${answer.status} ${answer.text.slice(0, 120)}`;
        // Refused, or (a path under /docs, which the service does not resolve) the API docs page itself.
        if (answer.status === 200) expect(answer.text, label).toMatch(/<title>Swagger UI<\/title>/);
        else expect([400, 404], label).toContain(answer.status);
        expect(answer.text, label).not.toMatch(/"rows"|# HELP|user-sms-send|"sms":/);
        expectNothingSecret(answer, label);
        expect((await rawGet(host, `${prefix}${trick}`, 'HEAD')).status, `${how} HEAD ${trick}`).toBe(answer.status);
      }
    }
  });

  it('cannot enumerate messages: every id without its key is the 404 of a missing message, and no key opens another message', async () => {
    for (const [how, , url] of bases()) {
      for (let id = 1; id <= 6; id += 1) {
        const answer = await call(url(`/messages/${id}`));
        expect(answer.status, `${how} ${id}`).toBe(404);
        expect(JSON.parse(answer.text), `${how} ${id}`).toMatchObject({ success: false, error: `Message ${id} not found` });
      }
      const missing = await call(url('/messages/999999'));
      const foreignKey = String(queued.status_url).split('?')[1]!;
      const wrongKey = await call(url(`/messages/${sent.id}?${foreignKey}`));
      const shape = (a: Answer) => ({ status: a.status, body: a.text.replace(/\d+/g, 'N') });
      expect(shape(wrongKey)).toEqual(shape(missing));
      for (const key of ['', 'x', 'A'.repeat(32), `${foreignKey.slice(4)}`, encodeURIComponent("' OR 1=1 --")]) {
        expect((await call(url(`/messages/${sent.id}?key=${key}`))).status, `${how} key ${key}`).toBe(404);
      }

      // A stranger's DELETE: the 404 of a missing message, whatever it presents, and nothing cancelled.
      const before = await rowOf(env, target.id);
      const missingDelete = await call(url('/messages/999999'), { method: 'DELETE' });
      expect(missingDelete.status, `${how} DELETE missing`).toBe(404);
      expect(notFoundShape(missingDelete, 999999), `${how} DELETE and GET of a missing id`).toEqual(notFoundShape(missing, 999999));
      const strangers = {
        'without a key': '',
        "with another message's key": `?${foreignKey}`,
        'with a wrong key': `?key=${'A'.repeat(32)}`,
      };
      for (const [label, query] of Object.entries(strangers)) {
        const answer = await call(url(`/messages/${target.id}${query}`), { method: 'DELETE' });
        expect(notFoundShape(answer, target.id), `${how} DELETE ${label}`).toEqual(notFoundShape(missingDelete, 999999));
        expect(answer.headers.get('www-authenticate'), `${how} DELETE ${label}`).toBeNull();
      }
      expect(await rowOf(env, target.id), how).toEqual(before);
      expect(before.status).toBe('queued');
    }
  });

  it('follows its own message by its status link, and cancels one still in line, through nginx as the CRM would', async () => {
    const status = await call(front.url(sent.status_url));
    expect(status.status).toBe(200);
    expect(JSON.parse(status.text)).toMatchObject({ id: sent.id, status: 'success', enterprise_number: '0367' });
    expectNothingSecret(status, 'status link');

    const line = await call(front.url(queued.status_url));
    const waiting = JSON.parse(line.text) as { id: number; status: string };
    expect(waiting.id).toBe(queued.id);
    expect(['pending', 'queued']).toContain(waiting.status);
    const cancelled = await call(front.url(queued.status_url), { method: 'DELETE' });
    expect(cancelled.status, cancelled.text).toBe(200);
    expect(JSON.parse(cancelled.text)).toMatchObject({ id: queued.id, status: 'failed', error_code: 'cancelled' });
    const again = await call(front.url(queued.status_url), { method: 'DELETE' });
    expect(again.status).toBe(409);
    expect(JSON.parse(again.text)).toMatchObject({ id: queued.id, status: 'failed' });
    const tooLate = await call(front.url(sent.status_url), { method: 'DELETE' });
    expect(tooLate.status).toBe(409);
    expect(JSON.parse(tooLate.text)).toMatchObject({ status: 'success' });

    const row = await env.db.selectFrom('user_sms_send').select(['status', 'error_code', 'operator_actions', 'status_key_hashes']).where('id', '=', String(queued.id)).executeTakeFirstOrThrow();
    expect(row).toMatchObject({ status: 'failed', error_code: 'cancelled' });
    expect(row.operator_actions).toEqual([expect.objectContaining({ action: 'cancel', by: 'caller (status link)', from: 'queued', to: 'failed' })]);
    // Only the key's hash is stored.
    const key = queued.status_url.split('key=')[1]!;
    expect(JSON.stringify(row)).not.toContain(key);
    expect(row.status_key_hashes).toEqual([createHash('sha256').update(key).digest()]);
    // Nothing was sent for it, and the access log did not keep its key.
    expect(env.sandbox.calls().some((c) => c.text === `${SECRET_TEXT} (2)`)).toBe(false);
    expect(front.accessLog()).toContain(`/messages/${queued.id}`);
    expect(front.accessLog()).not.toContain(key);
  });

  it('answers the operator on the host itself: reports, balance with the WebSMS user, metrics, the dashboard; previews only, never whole texts', async () => {
    for (const path of operatorPaths(sent.id)) expect((await call(`${local}${path}`)).status, path).toBe(200);
    // Every report the catalogue serves is among the paths tried above (and anonymously, before).
    const reportNames = [...REPORTS.keys()];
    for (const name of reportNames) expect(operatorPaths(sent.id).map((path) => path.split('?')[0]), name).toContain(`/reports/${name}`);
    const balance = JSON.parse((await call(`${local}/enterprises/0367/balance`)).text) as Record<string, unknown>;
    expect(balance.websms_user).toBe(DEMO_USER);
    // As a delivery report would have it: the sent message did not reach the phone, so the
    // undelivered report lists it too.
    await env.db.updateTable('user_sms_send').set({ delivery_status: 'undelivered' }).where('id', '=', String(sent.id)).execute();
    expect(reportNames).toEqual(expect.arrayContaining(['today', 'enterprise', 'recent', 'failures', 'spend', 'delivery', 'undelivered', 'audit']));
    for (const { name, enterprise } of REPORTS.values()) {
      const report = await call(`${local}/reports/${name}${enterprise === 'required' ? '?enterprise=0367' : ''}`);
      expect(report.status, name).toBe(200);
      expect(report.text, name).not.toContain(SECRET_TEXT.slice(0, 51));
      expect(report.text, name).not.toContain(PHONE);
    }
    const undelivered = JSON.parse((await call(`${local}/reports/undelivered`)).text) as { rows: { id: number; phone: string }[] };
    expect(undelivered.rows).toEqual([expect.objectContaining({ id: sent.id, phone: '+37529*****70' })]);
    // The same request relayed by a proxy on this host is not the operator.
    expect((await call(`${local}/reports/recent`, { headers: { 'x-forwarded-for': '203.0.113.5' } })).status).toBe(404);
  });

  it("cannot cancel or retry through the console, or pause the queue, even with a console form's cookie and token", async () => {
    const before = await rowOf(env, target.id);
    const token = 'f0rged-Token-0123456789';
    const form = { 'content-type': 'application/x-www-form-urlencoded', cookie: `user_sms_console_csrf=${token}`, 'sec-fetch-site': 'same-origin' };
    for (const [how, , url] of bases()) {
      for (const headers of [{}, ...SPOOFED]) {
        for (const action of ['cancel', 'retry']) {
          const answer = await call(url(`/admin/messages/${target.id}/${action}`), { method: 'POST', headers: { ...form, ...headers }, body: `csrf=${token}` });
          expect(answer.status, `${how} ${action} ${JSON.stringify(headers)}`).toBe(404);
        }
        const pause = await call(url(`/admin/queues/api/queues/${SEND_QUEUE}/pause`), { method: 'PUT', headers: { 'content-type': 'application/json', ...headers }, body: '{}' });
        expect(pause.status, `${how} pause ${JSON.stringify(headers)}`).toBe(404);
      }
    }
    expect(await rowOf(env, target.id)).toEqual(before);
    expect(await queuePaused()).toBe(false);

    // The very same requests from the operator on the host do act: what stopped them above was the guard.
    expect((await call(`${local}/admin/queues/api/queues/${SEND_QUEUE}/pause`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{}' })).status).toBe(200);
    expect(await queuePaused()).toBe(true);
    expect((await call(`${local}/admin/queues/api/queues/${SEND_QUEUE}/resume`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: '{}' })).status).toBe(200);
    expect(await queuePaused()).toBe(false);
    const cancel = await call(`${local}/admin/messages/${target.id}/cancel`, { method: 'POST', headers: form, body: `csrf=${token}` });
    expect(cancel.status, cancel.text).toBe(303);
    expect(await rowOf(env, target.id)).toMatchObject({
      status: 'failed',
      error_code: 'cancelled',
      operator_actions: [expect.objectContaining({ action: 'cancel', by: 'operator local (console)', from: 'queued', to: 'failed' })],
    });
  });
});

describeAttack('with API_TOKENS and operator credentials configured', () => {
  let env: TestEnv;
  let api: RunningApi;
  let second: RunningApi;
  let front: RunningNginx;
  let outside: string;
  let own: { id: number; status_url: string };
  let foreign: { id: number };

  beforeAll(async () => {
    env = await createTestEnv({
      HOST: '0.0.0.0',
      API_TOKENS: `crm:${sha(CRM_TOKEN)}:0367`,
      ADMIN_USER: ADMIN.user,
      ADMIN_PASSWORD: ADMIN.password,
      AUTH_FAILURES_PER_MINUTE: '5',
      RATE_LIMIT_PER_WINDOW: '1000',
    });
    await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    await env.seedEnterprise({ number: '0368', name: 'other', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    api = (await env.startService({ workers: 1 })).api!;
    second = await startApi(env.config, env.logger);
    outside = `http://${externalAddress!}:${new URL(api.url).port}`;
    front = await startNginx(nginx!, Number(new URL(api.url).port));
    own = (await postJson(outside, '/send', { enterprise_number: '0367', phone: PHONE, text: SECRET_TEXT }, { authorization: `Bearer ${CRM_TOKEN}` })).json as typeof own;
    foreign = (await postJson(api.url, '/send', { enterprise_number: '0368', phone: PHONE, text: SECRET_TEXT }, { authorization: `Bearer ${CRM_TOKEN}` })).json as typeof foreign;
    // 0368 is not the token's: recorded as refused, a message it cannot see either way.
    expect(foreign.id).toEqual(expect.any(Number));
  });

  afterAll(async () => {
    await front?.stop();
    await second?.stop();
    await env?.cleanup();
  });

  it('gives the token its own enterprise only: its messages and balance (without the WebSMS user), no reports, metrics or dashboard', async () => {
    const token = { authorization: `Bearer ${CRM_TOKEN}` };
    expect((await call(`${outside}/messages/${own.id}`, { headers: token })).status).toBe(200);
    expect((await call(`${outside}/messages/${foreign.id}`, { headers: token })).status).toBe(404);
    const balance = await call(`${outside}/enterprises/0367/balance`, { headers: token });
    expect(balance.status).toBe(200);
    expect(balance.text).not.toContain(DEMO_USER);
    expect((await call(`${outside}/enterprises/0368/balance`, { headers: token })).status).toBe(404);
    // A token is not the operator: with operator credentials configured, the operator surfaces ask
    // for them (401, a Basic challenge), whatever the token.
    const reads = ['/reports', '/reports/recent', '/metrics', '/admin/queues', '/admin/messages', `/admin/messages/${own.id}`].map((path) => ['GET', path] as const);
    for (const [method, path] of [...reads, ...operatorWrites(own.id)]) {
      const answer = await call(`${outside}${path}`, { method, headers: token });
      expect(answer.status, `${method} ${path}`).toBe(401);
      expect(answer.headers.get('www-authenticate'), `${method} ${path}`).toMatch(/^Basic /);
      expectNothingSecret(answer, `${method} ${path}`);
    }

    // Through nginx the token reaches its messages, and no operator surface at all: nginx answers 404 itself.
    expect((await call(front.url(`/messages/${own.id}`), { headers: token })).status).toBe(200);
    for (const path of everyOperatorPath(own.id)) {
      for (const method of ['GET', 'POST', 'PUT']) expectNginxNotFound(await call(front.url(path), { method, headers: token }), `nginx ${method} ${path}`);
    }
  });

  it('gives the operator everything, and the WebSMS user with the balance; without the credentials, even on the host, nothing', async () => {
    const operator = basic(ADMIN.user, ADMIN.password);
    for (const path of operatorPaths(own.id)) expect((await call(`${outside}${path}`, { headers: operator })).status, path).toBe(200);
    expect((await call(`${outside}/messages/${foreign.id}`, { headers: operator })).status).toBe(200);
    expect(JSON.parse((await call(`${outside}/enterprises/0367/balance`, { headers: operator })).text)).toMatchObject({ websms_user: DEMO_USER });
    for (const path of ['/reports/recent', '/metrics', '/admin/queues', '/admin/messages']) expect((await call(`${api.url}${path}`)).status, path).toBe(401);
    // The writes reach the operator, and are refused as read-only (DASHBOARD_READ_ONLY, the default).
    for (const [method, path] of operatorWrites(own.id)) expect((await call(`${outside}${path}`, { method, headers: operator })).status, `${method} ${path}`).toBe(405);

    // nginx publishes none of it, even to the right credentials: operators reach these on the host
    // or through a location of their own (README, "Security").
    const before = await rowOf(env, own.id);
    for (const path of everyOperatorPath(own.id)) {
      for (const method of ['GET', 'HEAD', 'POST', 'PUT']) {
        const answer = await call(front.url(path), { method, headers: operator });
        if (method === 'HEAD') expect(answer.status, `nginx HEAD ${path}`).toBe(404);
        else expectNginxNotFound(answer, `nginx ${method} ${path}`);
      }
    }
    expect(await rowOf(env, own.id)).toEqual(before);
  });

  it('throttles guessing: after a few wrong passwords, tokens or keys from one client, 429 from every API process, even for the right password', async () => {
    const client = { 'x-forwarded-for': '198.51.100.23' };
    const statuses: number[] = [];
    for (let i = 0; i < 3; i += 1) statuses.push((await call(`${api.url}/reports`, { headers: { ...client, ...basic(ADMIN.user, `guess-${i}`) } })).status);
    statuses.push((await call(`${second.url}/messages/${own.id}`, { headers: { ...client, authorization: 'Bearer not-a-token' } })).status);
    statuses.push((await call(`${second.url}/messages/${own.id}?key=${'B'.repeat(32)}`, { headers: client })).status);
    expect(statuses).toEqual([401, 401, 401, 401, 404]);
    const blocked = await call(`${api.url}/reports`, { headers: { ...client, ...basic(ADMIN.user, ADMIN.password) } });
    expect(blocked.status).toBe(429);
    expect(Number(blocked.headers.get('retry-after'))).toBeGreaterThan(0);
    expect((await call(`${second.url}/messages/${own.id}?key=${own.status_url.split('key=')[1]!}`, { headers: client })).status).toBe(429);
    // Another client is not affected, and a client that presents nothing is never throttled.
    expect((await call(`${api.url}/reports`, { headers: { 'x-forwarded-for': '198.51.100.24', ...basic(ADMIN.user, ADMIN.password) } })).status).toBe(200);
    expect((await call(`${api.url}/health`, { headers: client })).status).toBe(200);
  });
});
