import type { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { maskPhone } from '../../src/logger.ts';
import { SEND_QUEUE } from '../../src/queue/jobs.ts';
import { sandboxTriggers } from '../../src/websms/sandbox.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';

// The queue dashboard (bull-board on /admin/queues) through the real HTTP server, PostgreSQL, Redis,
// a worker and the WebSMS sandbox.

const ADMIN = { user: 'ops', password: 'dashboard-pass-7Qx' };
const basic = (user: string, password: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}` });
const AS_ADMIN = basic(ADMIN.user, ADMIN.password);
const WRONG_KEY = 'wr0ng-Key-Never-Shown-9911';

const PHONE = '+375296254070';
const INVALID_NUMBER = `+${sandboxTriggers.invalidNumber}`;
const ALWAYS_RATE_LIMITED = `+${sandboxTriggers.rateLimited}`;
/** Every phone this file sends to, as digits: none may appear in clear in any dashboard answer. */
const PHONE_DIGITS = [PHONE, INVALID_NUMBER, ALWAYS_RATE_LIMITED].map((p) => p.slice(1));
const KEYS = [DEMO_KEY, WRONG_KEY];
const QUEUE_API = `/admin/queues/api/queues/${SEND_QUEUE}`;

async function get(baseUrl: string, path: string, headers: Record<string, string> = {}) {
  const response = await fetch(`${baseUrl}${path}`, { headers });
  return { status: response.status, text: await response.text(), headers: response.headers };
}

async function call(baseUrl: string, method: string, path: string, body?: unknown) {
  const response = await fetch(`${baseUrl}${path}`, {
    method,
    headers: { ...AS_ADMIN, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, text: await response.text() };
}

describe('with ADMIN_USER/ADMIN_PASSWORD set and the default read-only mode', () => {
  let env: TestEnv;
  let baseUrl: string;
  let queue: Queue;
  const ids: Record<string, number> = {};

  beforeAll(async () => {
    env = await createTestEnv({
      ADMIN_USER: ADMIN.user,
      ADMIN_PASSWORD: ADMIN.password,
      RATE_LIMIT_PER_WINDOW: '1000',
      SEND_ATTEMPTS: '2',
      SEND_WAIT_MS: '200',
    });
    await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    await env.seedEnterprise({ number: '0368', name: 'bad key', customDomain: `${DEMO_USER} ${WRONG_KEY}` });
    const { api } = await env.startService({ workers: 1 });
    baseUrl = api!.url;
    queue = api!.deps.queue;

    // One message per kind of ending: sent, rejected (invalid number, wrong key), failed after retries.
    const cases = { sent: ['0367', PHONE], invalidNumber: ['0367', INVALID_NUMBER], wrongKey: ['0368', PHONE], retriedOut: ['0367', ALWAYS_RATE_LIMITED] } as const;
    for (const [name, [enterprise, phone]] of Object.entries(cases)) {
      const { json } = await postJson(baseUrl, '/send', { enterprise_number: enterprise, phone, text: `dashboard ${name}` });
      ids[name] = json.id as number;
    }
    await eventually(async () => {
      const states = await Promise.all(Object.values(ids).map((id) => queue.getJobState(`m${id}`)));
      return states.every((state) => state === 'completed' || state === 'failed') ? true : undefined;
    }, 30_000);
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it.each([
    ['no credentials', {}],
    ['a wrong password', basic(ADMIN.user, 'not-the-password')],
    ['a wrong user', basic('root', ADMIN.password)],
    ['a Bearer token', { authorization: `Bearer ${ADMIN.password}` }],
  ])('refuses %s with 401 and a Basic challenge, on the page and on its JSON API', async (_case, headers) => {
    for (const path of ['/admin/queues', '/admin/queues/', `/admin/queues/api/queues?activeQueue=${SEND_QUEUE}`, `${QUEUE_API}/m${ids.sent}`]) {
      const answer = await get(baseUrl, path, headers);
      expect(answer.status, path).toBe(401);
      expect(answer.headers.get('www-authenticate')).toMatch(/^Basic realm=/);
      expect(answer.text).not.toContain('messageId');
    }
  });

  it('serves the dashboard page and the queue with its jobs to the operator', async () => {
    const page = await get(baseUrl, '/admin/queues', AS_ADMIN);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(page.text).toContain('/admin/queues/');

    const list = await get(baseUrl, `/admin/queues/api/queues?activeQueue=${SEND_QUEUE}&status=completed`, AS_ADMIN);
    expect(list.status).toBe(200);
    const queue = (JSON.parse(list.text) as { queues: Array<{ name: string; readOnlyMode: boolean; jobs: Array<{ id: string; data: unknown }> }> }).queues[0]!;
    expect(queue.name).toBe(SEND_QUEUE);
    expect(queue.readOnlyMode).toBe(true);
    expect(queue.jobs.find((job) => job.id === `m${ids.sent}`)?.data).toEqual({ messageId: ids.sent, enterpriseNumber: '0367' });
  });

  it('shows no phone in clear and no WebSMS key in any dashboard answer: job data, return values, errors, stack traces, logs', async () => {
    const paths = [
      '/admin/queues',
      '/admin/queues/api/redis/stats',
      `${QUEUE_API}/workers`,
      `${QUEUE_API}/default-job-options`,
      ...['latest', 'completed', 'failed', 'delayed', 'waiting', 'active'].map((status) => `/admin/queues/api/queues?activeQueue=${SEND_QUEUE}&status=${status}&jobsPerPage=50`),
      ...Object.values(ids).flatMap((id) => [`${QUEUE_API}/m${id}`, `${QUEUE_API}/m${id}/logs`]),
    ];
    const answers = await Promise.all(paths.map((path) => get(baseUrl, path, AS_ADMIN)));
    for (const [index, answer] of answers.entries()) expect(answer.status, paths[index]).toBe(200);
    const everything = answers.map((a) => a.text).join('\n');

    // The answers really carry what could leak: outcomes, error texts and the failed job's stack.
    // (The job ran twice: its first run threw, leaving an error and a stack trace on the job.)
    const retried = JSON.parse(answers[paths.indexOf(`${QUEUE_API}/m${ids.retriedOut}`)]!.text) as {
      job: { failedReason: string; stacktrace: string[]; returnValue: { status: string } };
    };
    expect(retried.job.returnValue.status).toBe('failed');
    expect(retried.job.failedReason).toMatch(/WebSMS error 7/);
    expect(retried.job.stacktrace.length).toBeGreaterThan(0);
    const rejected = JSON.parse(answers[paths.indexOf(`${QUEUE_API}/m${ids.wrongKey}`)]!.text) as { job: { returnValue: { error: string } } };
    expect(rejected.job.returnValue.error).toMatch(/WebSMS error 4/);

    for (const digits of PHONE_DIGITS) expect(everything).not.toContain(digits);
    for (const key of KEYS) expect(everything).not.toContain(key);
    expect(everything).not.toContain(DEMO_USER);
  });

  it('masks a phone and hides a key that reach a job by mistake (defence in depth)', async () => {
    await queue.add('probe', { phone: '+375291112233', note: 'call 375291112233 now', apikey: 'leaked-key-123' }, { jobId: 'probe-1', delay: 3_600_000 });
    try {
      const answer = await get(baseUrl, `${QUEUE_API}/probe-1`, AS_ADMIN);
      expect(answer.status).toBe(200);
      expect(answer.text).not.toContain('375291112233');
      expect(answer.text).not.toContain('leaked-key-123');
      const job = (JSON.parse(answer.text) as { job: { data: Record<string, string> } }).job;
      expect(job.data).toEqual({ phone: maskPhone('+375291112233'), note: `call ${maskPhone('375291112233')} now`, apikey: '[redacted]' });
    } finally {
      await queue.remove('probe-1');
    }
  });

  it('refuses every change with 405 in read-only mode and leaves the queue as it was', async () => {
    const retriedJob = `m${ids.retriedOut}`;
    const attempts: Array<[string, string, unknown?]> = [
      ['PUT', `${QUEUE_API}/${retriedJob}/retry`],
      ['PUT', `${QUEUE_API}/retry/failed`],
      ['PUT', `${QUEUE_API}/${retriedJob}/clean`],
      ['PUT', `${QUEUE_API}/clean/completed`],
      ['PUT', `${QUEUE_API}/pause`],
      ['PUT', '/admin/queues/api/queues/pause'],
      ['PUT', `${QUEUE_API}/empty`],
      ['PUT', `${QUEUE_API}/obliterate`, {}],
      ['PUT', `${QUEUE_API}/promote`],
      ['POST', `${QUEUE_API}/add`, { name: 'send', data: { messageId: 1, enterpriseNumber: '0367' } }],
      ['PATCH', `${QUEUE_API}/${retriedJob}/update-data`, { data: { messageId: 1 } }],
      ['DELETE', `${QUEUE_API}/${retriedJob}`],
    ];
    const before = await queue.getJobCounts();
    const stateBefore = await queue.getJobState(retriedJob);
    for (const [method, path, body] of attempts) {
      const answer = await call(baseUrl, method, path, body);
      expect(answer.status, `${method} ${path}`).toBe(405);
    }
    expect(await queue.getJobCounts()).toEqual(before);
    expect(await queue.isPaused()).toBe(false);
    expect(await queue.getJobState(retriedJob)).toBe(stateBefore);
    expect((await queue.getJob(retriedJob))?.data).toEqual({ messageId: ids.retriedOut, enterpriseNumber: '0367' });
  });
});

describe('with DASHBOARD_READ_ONLY=false', () => {
  let env: TestEnv;
  let baseUrl: string;
  let queue: Queue;

  beforeAll(async () => {
    env = await createTestEnv({ ADMIN_USER: ADMIN.user, ADMIN_PASSWORD: ADMIN.password, DASHBOARD_READ_ONLY: 'false' });
    const { api } = await env.startService({ workers: 0 });
    baseUrl = api!.url;
    queue = api!.deps.queue;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it("passes the operator's changes through to the queue", async () => {
    expect((await call(baseUrl, 'PUT', `${QUEUE_API}/pause`)).status).toBe(200);
    expect(await queue.isPaused()).toBe(true);
    expect((await call(baseUrl, 'PUT', `${QUEUE_API}/resume`)).status).toBe(200);
    expect(await queue.isPaused()).toBe(false);
  });
});

describe('without ADMIN_USER/ADMIN_PASSWORD', () => {
  let env: TestEnv;
  let baseUrl: string;

  beforeAll(async () => {
    env = await createTestEnv();
    baseUrl = (await env.startService({ workers: 0 })).api!.url;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it('shows the dashboard, read-only, to a direct local peer only: through a proxy it does not exist, with or without credentials', async () => {
    const relayed = { 'x-forwarded-for': '203.0.113.7' };
    const attempts: Array<Record<string, string>> = [relayed, { ...relayed, ...AS_ADMIN }, { 'x-real-ip': '127.0.0.1' }, { forwarded: 'for=127.0.0.1' }];
    for (const headers of attempts) {
      for (const path of ['/admin/queues', `/admin/queues/api/queues?activeQueue=${SEND_QUEUE}`, '/admin/queues/static/favicon-32x32.png']) {
        const answer = await get(baseUrl, path, headers);
        expect(answer.status, path).toBe(404);
        expect(answer.text).not.toContain(SEND_QUEUE);
      }
    }
    const local = await get(baseUrl, `/admin/queues/api/queues?activeQueue=${SEND_QUEUE}`, {});
    expect(local.status).toBe(200);
    expect(local.text).toContain(SEND_QUEUE);
    const change = await fetch(`${baseUrl}/admin/queues/api/queues/pause`, { method: 'PUT' });
    expect(change.status).toBe(405);
  });
});
