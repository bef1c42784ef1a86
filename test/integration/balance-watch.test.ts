import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, type TestEnv } from '../support/context.ts';
import { parsePrometheusText, sampleValue, type ParsedFamily } from '../support/prometheus-text.ts';
import { redisDump } from '../support/redis-dump.ts';
import { createBalanceCache } from '../../src/balance-watch/balance-cache.ts';
import { refreshBalances } from '../../src/balance-watch/refresh-balances.ts';
import { createWebsmsClient } from '../../src/websms/client.ts';

// The balance watch: a background round in the workers, one at a time across worker processes, that
// reads every active enterprise's WebSMS balance (the sandbox's) into a Redis cache, which /metrics
// and GET /enterprises/{n}/balance answer from.

const ADMIN = { user: 'watch', password: 'balance-watch-9Zq' };
const AS_ADMIN = { authorization: `Basic ${Buffer.from(`${ADMIN.user}:${ADMIN.password}`).toString('base64')}` };
const SECOND = { user: 'july@example.by', apiKey: 'k3y-Secret-0368-fedcba' };

describe('balance watch', () => {
  let env: TestEnv;
  let baseUrl: string;

  beforeAll(async () => {
    // WebSMS calls may take longer than the 1 s interval (below): the budget allows them 5 s.
    env = await createTestEnv({ ADMIN_USER: ADMIN.user, ADMIN_PASSWORD: ADMIN.password, BALANCE_REFRESH_S: '1', WEBSMS_TIMEOUT_MS: '5000' });
    env.sandbox.addAccount({ ...SECOND, sms: 12.5, viber: 3 });
    await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    await env.seedEnterprise({ number: '0368', name: 'july', customDomain: `${SECOND.user} ${SECOND.apiKey}` });
    // WebSMS refuses this one (error 4): the others must not notice.
    await env.seedEnterprise({ number: '0369', name: 'wrong key', customDomain: `${DEMO_USER} not-the-key` });
    await env.seedEnterprise({ number: '0370', name: 'inactive', customDomain: `${DEMO_USER} ${DEMO_KEY}`, active: false });
    baseUrl = (await env.startService({ workers: 2 })).api!.url;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  const scrape = async (): Promise<Map<string, ParsedFamily>> => {
    const response = await fetch(`${baseUrl}/metrics`, { headers: AS_ADMIN });
    expect(response.status).toBe(200);
    return parsePrometheusText(await response.text());
  };
  const balanceCalls = (user: string) => env.sandbox.calls().filter((c) => c.endpoint === 'balances' && c.user === user);

  it('puts every active enterprise balance in /metrics within one refresh; one that WebSMS refuses does not stop the others', async () => {
    const families = await eventually(async () => {
      const f = await scrape();
      // A round writes each enterprise's balance as it reads it, and its own end last: wait for that.
      return sampleValue(f, 'user_sms_websms_balance_byn', { enterprise: '0368', account: 'sms' }) !== undefined &&
        sampleValue(f, 'user_sms_websms_balance_refreshed_timestamp_seconds', { enterprise: '0369' }) !== undefined &&
        (sampleValue(f, 'user_sms_balance_watch_last_round_timestamp_seconds') ?? 0) > 0
        ? f
        : undefined;
    });
    expect(sampleValue(families, 'user_sms_websms_balance_byn', { enterprise: '0367', account: 'sms' })).toBe(39.056508);
    expect(sampleValue(families, 'user_sms_websms_balance_byn', { enterprise: '0368', account: 'sms' })).toBe(12.5);
    expect(sampleValue(families, 'user_sms_websms_balance_byn', { enterprise: '0368', account: 'viber' })).toBe(3);
    const refreshedAt = sampleValue(families, 'user_sms_websms_balance_refreshed_timestamp_seconds', { enterprise: '0367' })!;
    expect(Math.abs(Date.now() / 1_000 - refreshedAt)).toBeLessThan(30);
    // Refused by WebSMS: never refreshed (0), and no balance to show.
    expect(sampleValue(families, 'user_sms_websms_balance_refreshed_timestamp_seconds', { enterprise: '0369' })).toBe(0);
    expect(sampleValue(families, 'user_sms_websms_balance_byn', { enterprise: '0369', account: 'sms' })).toBeUndefined();
    // Inactive: not watched.
    expect(sampleValue(families, 'user_sms_websms_balance_refreshed_timestamp_seconds', { enterprise: '0370' })).toBeUndefined();
    expect(sampleValue(families, 'user_sms_balance_refresh_interval_seconds')).toBe(1);
    expect(sampleValue(families, 'user_sms_balance_watch_last_round_timestamp_seconds')).toBeGreaterThan(0);
    expect(sampleValue(families, 'user_sms_metrics_source_up', { source: 'balances' })).toBe(1);
  });

  it('follows a balance as it changes at WebSMS, every BALANCE_REFRESH_S', async () => {
    env.sandbox.addAccount({ ...SECOND, sms: 1.25, viber: 0 });
    await eventually(async () => (sampleValue(await scrape(), 'user_sms_websms_balance_byn', { enterprise: '0368', account: 'sms' }) === 1.25 ? true : undefined));
  });

  it('runs one round at a time across worker processes, even when a round outlasts the interval', async () => {
    // Each WebSMS call now takes 1.5 s, longer than the 1 s interval: overlapping rounds would call
    // an account again before its previous call was answered.
    env.sandbox.setLatency(1_500);
    const from = Date.now();
    await eventually(() => (balanceCalls(SECOND.user).filter((c) => c.at > from).length >= 3 ? true : undefined), 20_000);
    env.sandbox.setLatency(0);
    // The sandbox stamps a call when it arrives: one round's call to an account arrives 1.5 s after the previous round's.
    const arrivals = balanceCalls(SECOND.user)
      .filter((c) => c.at > from)
      .map((c) => c.at);
    const gaps = arrivals.slice(1).map((at, i) => at - arrivals[i]!);
    expect(Math.min(...gaps), `gaps between rounds ${gaps.join(', ')} ms`).toBeGreaterThanOrEqual(1_400);
  });

  it('keeps only numbers, enterprise numbers and timestamps in Redis: no API key, no WebSMS login', async () => {
    const dump = await redisDump(env.redis, env.config.queuePrefix);
    expect(dump).toContain(':balances');
    expect(dump).not.toContain(DEMO_KEY);
    expect(dump).not.toContain(SECOND.apiKey);
    expect(dump).not.toContain('not-the-key');
    expect(dump).not.toContain(DEMO_USER);
    expect(dump).not.toContain(SECOND.user);
    const fields = await env.redis.hgetall(`${env.config.queuePrefix}:balances`);
    for (const [field, value] of Object.entries(fields)) {
      expect(field).toMatch(/^\d{4}:(sms|viber|refreshed_at|failed_at)$/);
      expect(Number.isFinite(Number(value)), `${field}=${value}`).toBe(true);
    }
  });

  it('GET /enterprises/{n}/balance answers from the cache with its age; ?fresh=true asks WebSMS now', async () => {
    env.sandbox.addAccount({ ...SECOND, sms: 7, viber: 0 });
    const cached = await eventually(async () => {
      const json = (await (await fetch(`${baseUrl}/enterprises/0368/balance`, { headers: AS_ADMIN })).json()) as Record<string, unknown>;
      return json.sms === 7 ? json : undefined;
    });
    expect(cached).toMatchObject({ enterprise_number: '0368', enterprise_name: 'july', websms_user: SECOND.user, sms: 7, viber: 0, total: 7, currency: 'BYN', cached: true });
    expect(cached.age_s).toBeTypeOf('number');
    expect(Date.parse(cached.refreshed_at as string)).toBeGreaterThan(Date.now() - 30_000);

    // Between rounds, the cache answers without a call; fresh=true makes one, and sees the change at once.
    env.sandbox.addAccount({ ...SECOND, sms: 6.5, viber: 0 });
    const callsBefore = balanceCalls(SECOND.user).length;
    const response = await fetch(`${baseUrl}/enterprises/0368/balance?fresh=true`, { headers: AS_ADMIN });
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ sms: 6.5, cached: false, age_s: 0 });
    expect(balanceCalls(SECOND.user).length).toBeGreaterThan(callsBefore);

    expect((await fetch(`${baseUrl}/enterprises/0368/balance?fresh=maybe`, { headers: AS_ADMIN })).status).toBe(400);
    // Unknown, refused and inactive enterprises answer as before: 404, 502, 404.
    expect((await fetch(`${baseUrl}/enterprises/0999/balance`, { headers: AS_ADMIN })).status).toBe(404);
    expect((await fetch(`${baseUrl}/enterprises/0369/balance`, { headers: AS_ADMIN })).status).toBe(502);
    expect((await fetch(`${baseUrl}/enterprises/0370/balance`, { headers: AS_ADMIN })).status).toBe(404);
  });
});

describe('a balance watch round', () => {
  let env: TestEnv;

  beforeAll(async () => {
    env = await createTestEnv();
    env.sandbox.addAccount({ ...SECOND, sms: 12.5, viber: 3 });
    // Three enterprises on one account, one on another, one with the first account's login but a wrong key.
    for (const number of ['0401', '0402', '0403']) await env.seedEnterprise({ number, customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    await env.seedEnterprise({ number: '0404', customDomain: `${SECOND.user} ${SECOND.apiKey}` });
    await env.seedEnterprise({ number: '0405', customDomain: `${DEMO_USER} not-the-key` });
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it('asks WebSMS once per account (user and key), and records its balance for every enterprise that shares it', async () => {
    const cache = createBalanceCache(env.redis, env.config.queuePrefix);
    const websms = createWebsmsClient({ baseUrl: env.config.websms.baseUrl, timeoutMs: 5_000, method: env.config.websms.method });
    const before = env.sandbox.calls().filter((c) => c.endpoint === 'balances').length;
    const round = await refreshBalances({ db: env.db, websms, cache, logger: env.logger }, { concurrency: 4 });

    const calls = env.sandbox.calls().filter((c) => c.endpoint === 'balances').slice(before);
    // One call for each of the three accounts: the shared one, the second, and the wrong key (refused).
    expect(calls).toHaveLength(3);
    expect(round).toEqual({ checked: 5, failed: 1, interrupted: false });
    for (const number of ['0401', '0402', '0403']) expect(await cache.get(number)).toMatchObject({ sms: 39.056508, viber: 0 });
    expect(await cache.get('0404')).toMatchObject({ sms: 12.5, viber: 3 });
    const refused = await cache.get('0405');
    expect(refused?.failedAtMs).toBeTypeOf('number');
    expect(refused?.sms).toBeUndefined();
    expect(await cache.lastRound()).toMatchObject({ checked: 5, failed: 1 });
  });
});

describe('GET /enterprises/{n}/balance without a cached balance', () => {
  let env: TestEnv;
  let baseUrl: string;

  beforeAll(async () => {
    env = await createTestEnv();
    await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    // The API alone: no worker, so no balance watch has filled the cache.
    baseUrl = (await env.startService({ workers: 0 })).api!.url;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it('asks WebSMS, then answers the next request from what it learned', async () => {
    const calls = () => env.sandbox.calls().filter((c) => c.endpoint === 'balances').length;
    const first = (await (await fetch(`${baseUrl}/enterprises/0367/balance`)).json()) as Record<string, unknown>;
    expect(first).toMatchObject({ enterprise_number: '0367', sms: 39.056508, cached: false, age_s: 0 });
    expect(calls()).toBe(1);
    const second = (await (await fetch(`${baseUrl}/enterprises/0367/balance`)).json()) as Record<string, unknown>;
    expect(second).toMatchObject({ sms: 39.056508, cached: true, refreshed_at: first.refreshed_at });
    expect(calls()).toBe(1);
  });
});
