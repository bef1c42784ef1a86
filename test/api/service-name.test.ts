import { createHash } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, DEMO_KEY, DEMO_USER, postJson } from '../support/context.ts';
import { spawnRole, type ServiceProcess } from '../support/service-processes.ts';

// service_name on every row: the token's name, else X-Service-Name, else DEFAULT_SERVICE_NAME
// ('user_api_endpoint', what the old service recorded for every send through its API). Through the
// real HTTP server, PostgreSQL and Redis; the rows are written before the answer, so the API alone
// (no worker) is enough, and `Prefer: respond-async` answers as soon as the message is queued.

const PHONE = '+375296254070';
const CONFIGURED = `${DEMO_USER} ${DEMO_KEY}`;
const ASYNC = { prefer: 'respond-async' };

async function startEnv(settings: Record<string, string>) {
  const env = await createTestEnv({ RATE_LIMIT_PER_WINDOW: '1000', ...settings });
  await env.seedEnterprise({ number: '0367', customDomain: CONFIGURED });
  await env.seedEnterprise({ number: '0368', customDomain: CONFIGURED });
  const { api } = await env.startService({ workers: 0 });
  const send = (body: unknown, headers: Record<string, string> = {}) => postJson(api!.url, '/send', body, { ...ASYNC, ...headers });
  const serviceNameOf = async (answer: { json: Record<string, unknown> }) =>
    (await env.db.selectFrom('user_sms_send').select('service_name').where('id', '=', String(answer.json.id)).executeTakeFirstOrThrow()).service_name;
  return { env, send, serviceNameOf };
}

describe('with the default settings', () => {
  let ctx: Awaited<ReturnType<typeof startEnv>>;
  beforeAll(async () => {
    ctx = await startEnv({});
  });
  afterAll(async () => {
    await ctx?.env.cleanup();
  });

  it("records 'user_api_endpoint' for a caller that names itself nowhere, on a queued message and on a 404 audit row", async () => {
    const queued = await ctx.send({ enterprise_number: '0367', phone: PHONE, text: 'unnamed caller' });
    expect(queued.status).toBe(202);
    expect(await ctx.serviceNameOf(queued)).toBe('user_api_endpoint');

    const unknown = await ctx.send({ enterprise_number: '0999', phone: PHONE, text: 'unnamed probe' });
    expect(unknown.status).toBe(404);
    expect(await ctx.serviceNameOf(unknown)).toBe('user_api_endpoint');
  });

  it('records X-Service-Name instead of the default when the caller sends one', async () => {
    const queued = await ctx.send({ enterprise_number: '0367', phone: PHONE, text: 'named caller' }, { 'x-service-name': 'crm' });
    expect(await ctx.serviceNameOf(queued)).toBe('crm');
    const unknown = await ctx.send({ enterprise_number: '0999', phone: PHONE, text: 'named probe' }, { 'x-service-name': 'scanner' });
    expect(unknown.status).toBe(404);
    expect(await ctx.serviceNameOf(unknown)).toBe('scanner');
  });

  it('records the default when X-Service-Name holds nothing printable', async () => {
    const answer = await ctx.send({ enterprise_number: '0367', phone: PHONE, text: 'blank name' }, { 'x-service-name': '\t' });
    expect(answer.status).toBe(202);
    expect(await ctx.serviceNameOf(answer)).toBe('user_api_endpoint');
  });
});

describe('with DEFAULT_SERVICE_NAME set', () => {
  let ctx: Awaited<ReturnType<typeof startEnv>>;
  beforeAll(async () => {
    ctx = await startEnv({ DEFAULT_SERVICE_NAME: 'legacy-crm' });
  });
  afterAll(async () => {
    await ctx?.env.cleanup();
  });

  it('records the configured name for callers that name themselves nowhere, 404 audit rows included', async () => {
    const queued = await ctx.send({ enterprise_number: '0367', phone: PHONE, text: 'configured default' });
    expect(queued.status).toBe(202);
    expect(await ctx.serviceNameOf(queued)).toBe('legacy-crm');
    const unknown = await ctx.send({ enterprise_number: '0999', phone: PHONE, text: 'configured default probe' });
    expect(unknown.status).toBe(404);
    expect(await ctx.serviceNameOf(unknown)).toBe('legacy-crm');
  });

  it('still records X-Service-Name when the caller sends one', async () => {
    const queued = await ctx.send({ enterprise_number: '0367', phone: PHONE, text: 'header beats default' }, { 'x-service-name': 'billing' });
    expect(await ctx.serviceNameOf(queued)).toBe('billing');
  });
});

describe('with API_TOKENS and DEFAULT_SERVICE_NAME set', () => {
  const TOKEN = 'crm-token-4Fq9Lm2Xv7Rb1Tz8Hn3Kd6Wp5';
  const bearer = { authorization: `Bearer ${TOKEN}` };
  let ctx: Awaited<ReturnType<typeof startEnv>>;
  beforeAll(async () => {
    ctx = await startEnv({ DEFAULT_SERVICE_NAME: 'legacy-crm', API_TOKENS: `crm:${createHash('sha256').update(TOKEN).digest('hex')}:0367` });
  });
  afterAll(async () => {
    await ctx?.env.cleanup();
  });

  it("records the token's name over X-Service-Name and the default, also on the refused row for another enterprise", async () => {
    const queued = await ctx.send({ enterprise_number: '0367', phone: PHONE, text: 'token caller' }, { ...bearer, 'x-service-name': 'billing' });
    expect(queued.status).toBe(202);
    expect(await ctx.serviceNameOf(queued)).toBe('crm');

    const plain = await ctx.send({ enterprise_number: '0367', phone: PHONE, text: 'token caller, no header' }, bearer);
    expect(await ctx.serviceNameOf(plain)).toBe('crm');

    const notAllowed = await ctx.send({ enterprise_number: '0368', phone: PHONE, text: 'token probe' }, bearer);
    expect(notAllowed.status).toBe(404);
    expect(await ctx.serviceNameOf(notAllowed)).toBe('crm');
  });
});

describe('start-up', () => {
  const started: ServiceProcess[] = [];
  afterEach(async () => {
    await Promise.all(started.splice(0).map((p) => p.kill9()));
  });

  it('refuses to start the API with an invalid DEFAULT_SERVICE_NAME, naming the variable', async () => {
    const service = spawnRole('api', { DEFAULT_SERVICE_NAME: 'user api endpoint', PORT: '0' });
    started.push(service);
    expect(await service.exited).toBe(2);
    expect(service.output().join('\n')).toContain('DEFAULT_SERVICE_NAME: must be 1–50 letters, digits');
  });
});
