import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sandboxTriggers, type SandboxCall } from '../../src/websms/sandbox.ts';
import { insertPendingMessage } from '../../src/messages/repository.ts';
import { redisDump } from '../support/redis-dump.ts';
import { createRedis } from '../../src/redis-connection.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';

const PHONE = '+375296254070';
const CREDENTIALS = `${DEMO_USER} ${DEMO_KEY}`;

async function finalRow(env: TestEnv, id: number, timeoutMs = 20_000) {
  return eventually(async () => {
    const row = await env.db.selectFrom('user_sms_send').selectAll().where('id', '=', String(id)).executeTakeFirst();
    return row && ['success', 'failed', 'unknown'].includes(row.status) ? row : undefined;
  }, timeoutMs);
}

function callsFor(env: TestEnv, providerRef: string | null): SandboxCall[] {
  return env.sandbox.calls().filter((c) => c.customId === providerRef && c.endpoint.includes('send'));
}

describe('each WebSMS failure class gives its documented outcome, never a duplicate send', () => {
  let env: TestEnv;
  let baseUrl: string;

  beforeAll(async () => {
    env = await createTestEnv({ RATE_LIMIT_PER_WINDOW: '1000', SEND_ATTEMPTS: '3', SEND_WAIT_MS: '200' });
    await env.seedEnterprise({ number: '0367', name: 'june', customDomain: CREDENTIALS });
    await env.seedEnterprise({ number: '0368', customDomain: `${DEMO_USER} wrong-key` });
    baseUrl = (await env.startService({ workers: 2 })).api!.url;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  async function sendAndSettle(phone: string, enterprise = '0367') {
    const { json } = await postJson(baseUrl, '/send', { enterprise_number: enterprise, phone, text: `case ${phone}` });
    const row = await finalRow(env, json.id as number);
    return { row, calls: callsFor(env, row.provider_ref), accepted: env.sandbox.acceptedSends().filter((c) => c.customId === row.provider_ref) };
  }

  it('error 4 (bad key) is final after one call', async () => {
    const { row, calls } = await sendAndSettle(PHONE, '0368');
    expect(row.status).toBe('failed');
    expect(row.error_message).toMatch(/WebSMS error 4/);
    expect(calls).toHaveLength(1);
  });

  it('error 100 (invalid number) is final after one call', async () => {
    const { row, calls } = await sendAndSettle(`+${sandboxTriggers.invalidNumber}`);
    expect(row).toMatchObject({ status: 'failed', error_code: 'websms_100' });
    expect(calls).toHaveLength(1);
  });

  it('error 7 once (rate) is retried and sent exactly once', async () => {
    const { row, calls, accepted } = await sendAndSettle(`+${sandboxTriggers.rateLimitedOnce}`);
    expect(row).toMatchObject({ status: 'success', attempts: 2 });
    expect(calls).toHaveLength(2);
    expect(accepted).toHaveLength(1);
  });

  it('error 1 once (internal) is retried and sent exactly once', async () => {
    const { row, accepted } = await sendAndSettle(`+${sandboxTriggers.internalErrorOnce}`);
    expect(row.status).toBe('success');
    expect(accepted).toHaveLength(1);
  });

  it('error 7 every time fails for good once the attempts are spent', async () => {
    const { row, calls, accepted } = await sendAndSettle(`+${sandboxTriggers.rateLimited}`);
    expect(row).toMatchObject({ status: 'failed', error_code: 'websms_7', attempts: 3 });
    expect(calls).toHaveLength(3);
    expect(accepted).toHaveLength(0);
  });

  it('HTTP 500 after accepting is looked up, found, and recorded as sent without a resend', async () => {
    const { row, calls, accepted } = await sendAndSettle(`+${sandboxTriggers.acceptedThenHttp500}`);
    expect(row.status).toBe('success');
    expect(calls).toHaveLength(1);
    expect(accepted).toHaveLength(1);
    expect(env.sandbox.calls().some((c) => c.customId === row.provider_ref && c.endpoint.includes('statusCustom'))).toBe(true);
  });

  it('a hang after accepting times out, is looked up, found, and never resent', async () => {
    const { row, calls, accepted } = await sendAndSettle(`+${sandboxTriggers.acceptedThenHangOnce}`);
    expect(row).toMatchObject({ status: 'success', resent_after_unknown: false });
    expect(calls).toHaveLength(1);
    expect(accepted).toHaveLength(1);
  });

  it('a hang before accepting times out, is looked up, not found, resent once, and recorded as a possible duplicate', async () => {
    const { row, calls, accepted } = await sendAndSettle(`+${sandboxTriggers.hangOnce}`);
    expect(row).toMatchObject({ status: 'success', attempts: 2, resent_after_unknown: true });
    expect(calls).toHaveLength(2);
    expect(accepted).toHaveLength(1);
  });

  it('HTTP 500 without accepting, every time, ends failed with nothing accepted', async () => {
    const { row, accepted } = await sendAndSettle(`+${sandboxTriggers.http500}`);
    expect(row.status).toBe('failed');
    expect(accepted).toHaveLength(0);
  });

  it('a garbage (non-JSON) answer is treated as unknown, looked up, and never duplicated', async () => {
    const { row, accepted } = await sendAndSettle(`+${sandboxTriggers.garbage}`);
    expect(['failed', 'unknown']).toContain(row.status);
    expect(accepted).toHaveLength(0);
  });

  it('writes one log line per send outcome with enterprise and message id, phones masked, no key', () => {
    const lines = env.logLines();
    const outcomes = lines.map((l) => JSON.parse(l) as Record<string, unknown>).filter((l) => l.outcome === 'success' && l.msg === 'sms sent');
    expect(outcomes.length).toBeGreaterThan(0);
    for (const line of outcomes) {
      expect(line).toHaveProperty('enterprise');
      expect(line).toHaveProperty('messageId');
    }
    const all = lines.join('\n');
    expect(all).not.toContain(DEMO_KEY);
    expect(all).not.toContain('375296254070');
  });

  it('keeps no phone, text or key in Redis', async () => {
    const dump = await redisDump(env.redis, env.config.queuePrefix);
    expect(dump.length).toBeGreaterThan(0);
    expect(dump).not.toContain(DEMO_KEY);
    expect(dump).not.toContain('375296254070');
    expect(dump).not.toContain('case +');
  });
});

describe('WebSMS unreachable (connection refused)', () => {
  let env: TestEnv;
  let baseUrl: string;

  beforeAll(async () => {
    const closedPort = await new Promise<number>((resolve) => {
      const server = createServer().listen(0, '127.0.0.1', () => {
        const { port } = server.address() as { port: number };
        server.close(() => resolve(port));
      });
    });
    env = await createTestEnv({ WEBSMS_BASE_URL: `http://127.0.0.1:${closedPort}/api`, SEND_ATTEMPTS: '3', SEND_WAIT_MS: '200' });
    await env.seedEnterprise({ number: '0367', customDomain: CREDENTIALS });
    baseUrl = (await env.startService({ workers: 1 })).api!.url;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it('retries a never-sent message and marks it failed once the attempts are spent', async () => {
    const { json } = await postJson(baseUrl, '/send?wait=false', { enterprise_number: '0367', phone: PHONE, text: 'refused' });
    const row = await finalRow(env, json.id as number);
    expect(row).toMatchObject({ status: 'failed', error_code: 'not_sent', attempts: 3 });
    expect(row.error_message).toMatch(/unreachable/i);
    expect(row.error_message).not.toContain(DEMO_KEY);
  });
});

describe('queued sending', () => {
  let env: TestEnv;
  let baseUrl: string;
  const WINDOW_MS = 2_000;

  beforeAll(async () => {
    env = await createTestEnv({
      RATE_LIMIT_PER_WINDOW: '1',
      RATE_LIMIT_WINDOW_MS: String(WINDOW_MS),
      // Wider than the grant → WebSMS delay on a busy machine, so the spacing WebSMS sees holds.
      RATE_LIMIT_MARGIN_MS: '200',
      SEND_WAIT_MS: '500',
      WORKER_CONCURRENCY: '2',
      SWEEP_INTERVAL_MS: '1000',
      SWEEP_PENDING_AFTER_MS: '1000',
    });
    await env.seedEnterprise({ number: '0367', customDomain: CREDENTIALS });
    await env.seedEnterprise({ number: '0500', customDomain: CREDENTIALS });
    await env.seedEnterprise({ number: '0600', customDomain: CREDENTIALS });
    await env.seedEnterprise({ number: '0700', customDomain: CREDENTIALS });
    baseUrl = (await env.startService({ workers: 1 })).api!.url;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it('answers 202 with the expected send time when the window is full, then sends it later', async () => {
    const first = await postJson(baseUrl, '/send', { enterprise_number: '0367', phone: PHONE, text: 'first' });
    expect(first.status).toBe(200);
    const second = await postJson(baseUrl, '/send', { enterprise_number: '0367', phone: PHONE, text: 'second' });
    expect(second.status).toBe(202);
    expect(second.json).toMatchObject({ success: false, error: null, status: 'queued' });
    expect(second.json.status_url).toMatch(new RegExp(`^/messages/${String(second.json.id)}\\?key=[\\w-]{32}$`));
    const expectedAt = Date.parse(second.json.expected_send_at as string);
    expect(expectedAt).toBeGreaterThan(Date.now());
    expect(expectedAt).toBeLessThanOrEqual(Date.now() + WINDOW_MS + 400);

    const row = await finalRow(env, second.json.id as number);
    expect(row.status).toBe('success');
    const answer = (await (await fetch(`${baseUrl}/messages/${String(second.json.id)}`)).json()) as Record<string, unknown>;
    expect(answer).toMatchObject({ status: 'success', message_id: expect.any(Number) as number });
    const times = env.sandbox.acceptedSends().filter((c) => c.text === 'first' || c.text === 'second').map((c) => c.at);
    expect(times).toHaveLength(2);
    expect(Math.abs(times[1]! - times[0]!)).toBeGreaterThanOrEqual(WINDOW_MS);
  });

  it("one enterprise's backlog does not delay another enterprise's message", async () => {
    for (let i = 0; i < 10; i += 1) {
      const r = await postJson(baseUrl, '/send?wait=false', { enterprise_number: '0500', phone: PHONE, text: `backlog ${i}` });
      expect(r.status).toBe(202);
    }
    const started = Date.now();
    const other = await postJson(baseUrl, '/send', { enterprise_number: '0600', phone: PHONE, text: 'not delayed' });
    expect(other.status).toBe(200);
    expect(other.json.success).toBe(true);
    // Only a bound that proves "not behind the backlog": draining it takes 9 windows (18 s).
    expect(Date.now() - started).toBeLessThan(WINDOW_MS);
  });

  it('the sweeper enqueues a message whose enqueue never happened', async () => {
    const id = await insertPendingMessage(env.db, { enterpriseNumber: '0700', enterpriseName: null, phone: PHONE, text: 'orphan', sender: 'Vochi-CRM', customId: null, serviceName: null, requestIp: null, userAgent: null });
    const row = await finalRow(env, id, 15_000);
    expect(row.status).toBe('success');
    expect(env.sandbox.acceptedSends().filter((c) => c.text === 'orphan')).toHaveLength(1);
    expect(env.logLines().some((l) => l.includes('sweeper re-enqueued') && l.includes(`"messageId":${id}`))).toBe(true);
  });
});

describe('the rate limit holds end to end across several workers', () => {
  let env: TestEnv;
  let baseUrl: string;
  const LIMIT = 3;
  const WINDOW_MS = 1_500;

  beforeAll(async () => {
    // The product's default margin: WebSMS's receive times are checked against the bare window, and
    // the margin is what absorbs the jitter between our grant and WebSMS's receipt of the request.
    env = await createTestEnv({ RATE_LIMIT_PER_WINDOW: String(LIMIT), RATE_LIMIT_WINDOW_MS: String(WINDOW_MS), RATE_LIMIT_MARGIN_MS: '200', WORKER_CONCURRENCY: '4' });
    await env.seedEnterprise({ number: '0367', customDomain: CREDENTIALS });
    baseUrl = (await env.startService({ workers: 3 })).api!.url;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it('never lets WebSMS see more than 3 sends of one enterprise in any rolling window, and drains the backlog at that rate', async () => {
    const ids: number[] = [];
    for (let i = 0; i < 9; i += 1) {
      const r = await postJson(baseUrl, '/send?wait=false', { enterprise_number: '0367', phone: PHONE, text: `burst ${i}` });
      ids.push(r.json.id as number);
    }
    for (const id of ids) expect((await finalRow(env, id, 30_000)).status).toBe('success');
    const times = env.sandbox.acceptedSends().filter((c) => c.text?.startsWith('burst')).map((c) => c.at).sort((a, b) => a - b);
    expect(times).toHaveLength(9);
    for (let i = 0; i + LIMIT < times.length; i += 1) {
      expect(times[i + LIMIT]! - times[i]!, `sends ${i} and ${i + LIMIT}`).toBeGreaterThanOrEqual(WINDOW_MS);
    }
    // 9 sends at 3 per window (plus margin) need 2 windows after the first batch; allow scheduling slack.
    expect(times[8]! - times[0]!).toBeLessThan(3 * WINDOW_MS);
  });
});

describe('a job that failed for good while its row was unfinished', () => {
  let env: TestEnv;

  beforeAll(async () => {
    env = await createTestEnv({ SWEEP_INTERVAL_MS: '1000', SWEEP_PENDING_AFTER_MS: '1000' });
    await env.seedEnterprise({ number: '0367', customDomain: CREDENTIALS });
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it('is retried by the sweeper, because the row, not the job, says whether the message went out', async () => {
    const { Queue, Worker, UnrecoverableError } = await import('bullmq');
    const id = await insertPendingMessage(env.db, { enterpriseNumber: '0367', enterpriseName: null, phone: PHONE, text: 'revived', sender: 'Vochi-CRM', customId: null, serviceName: null, requestIp: null, userAgent: null });
    const queue = new Queue('user-sms-send', { connection: env.redis, prefix: env.config.queuePrefix });
    await queue.add('send', { messageId: id, enterpriseNumber: '0367' }, { jobId: `m${id}`, attempts: 1 });
    // Stands in for a worker whose last attempt died on a PostgreSQL outage.
    const failing = new Worker(
      'user-sms-send',
      () => {
        throw new UnrecoverableError('database unavailable');
      },
      { connection: createRedis(env.config.redis, 'blocking'), prefix: env.config.queuePrefix },
    );
    await eventually(async () => ((await queue.getJobState(`m${id}`)) === 'failed' ? true : undefined));
    await failing.close();

    await env.startService({ workers: 1, api: false });
    const row = await finalRow(env, id, 15_000);
    expect(row.status).toBe('success');
    expect(env.sandbox.acceptedSends().filter((c) => c.text === 'revived')).toHaveLength(1);
    expect(env.logLines().some((l) => l.includes('retried the failed job'))).toBe(true);
    await queue.close();
  });
});
