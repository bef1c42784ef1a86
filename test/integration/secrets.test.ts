import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sandboxTriggers } from '../../src/websms/sandbox.ts';
import { runCli } from '../support/cli.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';
import { redisDump } from '../support/redis-dump.ts';

// Enterprise API keys are secrets: after messages have gone through every path (success, each
// WebSMS failure, unknown and unconfigured enterprises, queued answers, balance, reports, metrics,
// the dashboard and the operator commands), no key may appear in any HTTP answer, log line, Redis
// key or value, or command output — neither raw nor URL-encoded.

const WRONG_KEY = 'wr0ng+Key/0368=secret';
const MALFORMED_KEY = 'three-word-secret';
const SECRETS = [DEMO_KEY, WRONG_KEY, MALFORMED_KEY];
const forms = (secret: string) => [secret, encodeURIComponent(secret), encodeURIComponent(secret).replace(/%20/g, '+')];

const ADMIN = { user: 'operator', password: 'operator-password-1' };
const basic = `Basic ${Buffer.from(`${ADMIN.user}:${ADMIN.password}`).toString('base64')}`;

let env: TestEnv;
let baseUrl: string;
const seen: string[] = [];

async function get(path: string, headers: Record<string, string> = {}): Promise<number> {
  const response = await fetch(`${baseUrl}${path}`, { headers });
  seen.push(`GET ${path} ${response.status} ${JSON.stringify([...response.headers])}\n${await response.text()}`);
  return response.status;
}

async function send(body: Record<string, unknown>, query = ''): Promise<Record<string, unknown>> {
  const answer = await postJson(baseUrl, `/send${query}`, body);
  seen.push(`POST /send ${answer.status} ${JSON.stringify([...answer.headers])}\n${answer.text}`);
  return answer.json;
}

beforeAll(async () => {
  env = await createTestEnv({
    RATE_LIMIT_PER_WINDOW: '1000',
    SEND_ATTEMPTS: '2',
    SEND_WAIT_MS: '3000',
    ADMIN_USER: ADMIN.user,
    ADMIN_PASSWORD: ADMIN.password,
    DASHBOARD_READ_ONLY: 'false',
  });
  await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  await env.seedEnterprise({ number: '0368', customDomain: `${DEMO_USER} ${WRONG_KEY}` });
  await env.seedEnterprise({ number: '0369', customDomain: `${DEMO_USER} ${MALFORMED_KEY} extra` });
  baseUrl = (await env.startService({ workers: 1 })).api!.url;

  const phones = [
    '+375296254070',
    ...Object.values(sandboxTriggers).map((digits) => `+${digits}`),
  ];
  const ids: number[] = [];
  for (const phone of phones) ids.push((await send({ enterprise_number: '0367', phone, text: `secret scan ${phone}` }, '?wait=false')).id as number);
  ids.push((await send({ enterprise_number: '0368', phone: '+375296254070', text: 'wrong key' })).id as number);
  await send({ enterprise_number: '0369', phone: '+375296254070', text: 'malformed credentials' });
  await send({ enterprise_number: '0999', phone: '+375296254070', text: 'unknown enterprise' });

  // Every message finishes (each failure class included) before the scan. The failure classes take
  // their retries, look-ups and backoffs: on a machine busy with other test runs that took over 45 s.
  await eventually(async () => {
    const open = await env.db.selectFrom('user_sms_send').select('id').where('status', 'in', ['pending', 'queued', 'sending']).execute();
    return open.length === 0 ? true : undefined;
  }, 100_000);
  for (const id of ids) await get(`/messages/${id}`);
}, 150_000);

afterAll(async () => {
  await env?.cleanup();
});

describe('no enterprise API key anywhere', () => {
  it('in HTTP answers: send, messages, balance, reports, metrics, health, docs', async () => {
    for (const n of ['0367', '0368', '0369', '0999']) await get(`/enterprises/${n}/balance`);
    for (const report of ['today', 'enterprise?enterprise=0367', 'recent', 'failures', 'spend', 'audit']) {
      expect(await get(`/reports/${report}`, { authorization: basic })).toBe(200);
    }
    expect(await get('/metrics', { authorization: basic })).toBe(200);
    for (const path of ['/', '/health', '/openapi.json']) await get(path);
    assertClean(seen.join('\n'));
  });

  it("in the dashboard's API answers, for every job state", async () => {
    const before = seen.length;
    for (const status of ['latest', 'active', 'waiting', 'delayed', 'failed', 'completed']) {
      expect(await get(`/admin/queues/api/queues?activeQueue=user-sms-send&status=${status}&page=1&jobsPerPage=100`, { authorization: basic })).toBe(200);
    }
    const dashboard = seen.slice(before).join('\n');
    expect(dashboard).toContain('messageId');
    expect(dashboard).not.toContain('375296254070');
    assertClean(dashboard);
  });

  it('in log lines', () => {
    const logs = env.logLines().join('\n');
    expect(logs).toContain('sms sent');
    assertClean(logs);
  });

  it('in Redis keys and values', async () => {
    const dump = await redisDump(env.redis, env.config.queuePrefix);
    expect(dump.length).toBeGreaterThan(0);
    assertClean(dump);
  });

  it('in the output of the operator commands', async () => {
    const outputs = await Promise.all([
      runCli(env, 'balance', ['0367']),
      runCli(env, 'balance', ['0368']),
      runCli(env, 'balance', ['--all', '--json']),
      runCli(env, 'jobs', ['list', '--json']),
      runCli(env, 'report', ['failures']),
    ]);
    expect(outputs[0].code).toBe(0);
    expect(outputs[1].code).not.toBe(0);
    assertClean(outputs.map((o) => o.all).join('\n'));
  });
});

function assertClean(text: string): void {
  for (const secret of SECRETS) {
    for (const form of forms(secret)) expect(text.includes(form), `found ${secret} (${form})`).toBe(false);
  }
}
