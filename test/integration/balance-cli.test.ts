import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { balanceRoute } from '../../src/api/balance-route.ts';
import { errorHandler } from '../../src/api/errors.ts';
import { createWebsmsClient } from '../../src/websms/client.ts';
import { runCli, type CliResult } from '../support/cli.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, type TestEnv } from '../support/context.ts';

// `npm run balance` as an operator runs it (its own process, real PostgreSQL, the WebSMS sandbox),
// and GET /enterprises/{number}/balance through the running API.

const WRONG_KEY = 'wrong-Key-0368-zyxw';
const SECOND_USER = 'second@example.by';
const SECOND_KEY = 'second-Secret-Key-0369';
const SECRETS = [DEMO_KEY, WRONG_KEY, SECOND_KEY];

let env: TestEnv;
let apiUrl: string;
const outputs: string[] = [];

async function balance(...args: string[]): Promise<CliResult> {
  const result = await runCli(env, 'balance', args);
  outputs.push(result.all);
  return result;
}

beforeAll(async () => {
  env = await createTestEnv();
  env.sandbox.addAccount({ user: SECOND_USER, apiKey: SECOND_KEY, sms: 3.5, viber: 1.25 });
  await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  await env.seedEnterprise({ number: '0368', name: 'may', customDomain: `${DEMO_USER} ${WRONG_KEY}` });
  await env.seedEnterprise({ number: '0369', name: 'april', customDomain: `${SECOND_USER} ${SECOND_KEY}` });
  await env.seedEnterprise({ number: '0370', name: 'no settings', customDomain: null });
  await env.seedEnterprise({ number: '0371', name: 'malformed', customDomain: 'nospace' });
  await env.seedEnterprise({ number: '0372', name: 'closed', customDomain: `${DEMO_USER} ${DEMO_KEY}`, active: false });
  // The wider system's table may hold NULL in `active`: only an explicit false disables.
  await env.seedEnterprise({ number: '0373', name: 'legacy', customDomain: `${DEMO_USER} ${DEMO_KEY}`, active: null });
  apiUrl = (await env.startService({ workers: 0 })).api!.url;
});

afterAll(async () => {
  await env?.cleanup();
});

describe('npm run balance -- <enterprise_number>', () => {
  it('prints the old documented block for a configured enterprise and exits 0', async () => {
    const result = await balance('0367');
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(
      [
        '🔍 Проверка баланса WebSMS для предприятия 0367...',
        '💰 БАЛАНС WEBSMS:',
        '============================================================',
        '🏢 Предприятие: 0367 (june)',
        `👤 Пользователь: ${DEMO_USER}`,
        '------------------------------------------------------------',
        '   📱 SMS: 39.056508 BYN',
        '   💬 Viber: 0 BYN',
        '   💰 Общий доступный баланс: 39.056508 BYN',
        '============================================================',
        '',
      ].join('\n'),
    );
    expect(result.stderr).toBe('');
  });

  it('prints the documented error and exits 1 for an unknown enterprise and for one without WebSMS settings', async () => {
    for (const number of ['9999', '0370', '0371']) {
      const result = await balance(number);
      expect(result.code).toBe(1);
      expect(result.stdout).toBe(`🔍 Проверка баланса WebSMS для предприятия ${number}...\n`);
      expect(result.stderr).toBe(`❌ Предприятие ${number} не найдено или не имеет WebSMS настроек\n   Проверьте поле custom_domain в таблице enterprises\n`);
    }
  });

  it('exits 3 with WebSMS’s reason, and never the key, when WebSMS refuses the credentials', async () => {
    const result = await balance('0368');
    expect(result.code).toBe(3);
    expect(result.stderr).toContain('❌ WebSMS вернул ошибку при запросе баланса для предприятия 0368 (may)');
    expect(result.stderr).toContain('WebSMS error 4: Invalid user or apikey');
    expect(result.all).not.toContain(WRONG_KEY);
  });

  it('exits 3 and says WebSMS did not answer in time when it is slower than WEBSMS_TIMEOUT_MS', async () => {
    env.sandbox.setLatency(env.config.websms.timeoutMs + 2_000);
    try {
      const result = await balance('0367');
      expect(result.code).toBe(3);
      expect(result.stderr).toContain('❌ WebSMS не ответил вовремя для предприятия 0367 (june)');
    } finally {
      env.sandbox.setLatency(0);
    }
  });

  it('shows an inactive enterprise’s balance when asked by number, with a warning after the block', async () => {
    const result = await balance('0372');
    expect(result.code).toBe(0);
    expect(result.stdout).toContain('   💰 Общий доступный баланс: 39.056508 BYN');
    expect(result.stdout).toMatch(/неактивно/);
  });

  it('prints machine-readable JSON with --json', async () => {
    const result = await balance('0367', '--json');
    expect(result.code).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({
      ok: true,
      enterprise_number: '0367',
      enterprise_name: 'june',
      websms_user: DEMO_USER,
      sms: 39.056508,
      viber: 0,
      total: 39.056508,
      currency: 'BYN',
      active: true,
    });
    const missing = await balance('9999', '--json');
    expect(missing.code).toBe(1);
    expect(JSON.parse(missing.stdout)).toMatchObject({ ok: false, error: { code: 'not_found' } });
  });

  it('exits 4 with --below when the SMS balance is under the threshold, 0 when it is not', async () => {
    const low = await balance('0367', '--below', '50');
    expect(low.code).toBe(4);
    expect(low.stdout).toContain('⚠️  Баланс SMS ниже порога: 39.056508 < 50 BYN');
    const fine = await balance('0367', '--below', '10');
    expect(fine.code).toBe(0);
    expect(fine.stdout).not.toContain('ниже порога');
  });

  it('exits 2 with the usage on bad arguments', async () => {
    for (const args of [[], ['--all', '0367'], ['0367', '--below', 'lots'], ['0367', '0368'], ['0367', '--colour']]) {
      const result = await balance(...args);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr).toContain('usage: npm run balance');
    }
  });
});

describe('npm run balance -- --all', () => {
  it('checks every active enterprise with settings, one block each in number order, plus a summary; a WebSMS error makes it exit 3', async () => {
    const result = await balance('--all');
    expect(result.code).toBe(3);
    const headers = result.stdout.split('\n').filter((line) => line.startsWith('🔍'));
    // 0370 has no settings and 0372 is inactive: skipped, as the old documented loop did.
    expect(headers).toEqual(['0367', '0368', '0369', '0371', '0373'].map((n) => `🔍 Проверка баланса WebSMS для предприятия ${n}...`));
    expect(result.stdout).toContain('🏢 Предприятие: 0367 (june)');
    expect(result.stdout).toContain('   📱 SMS: 3.5 BYN\n   💬 Viber: 1.25 BYN\n   💰 Общий доступный баланс: 4.75 BYN');
    expect(result.stdout).toContain('WebSMS error 4: Invalid user or apikey');
    expect(result.stdout).toContain('❌ Предприятие 0371 не найдено или не имеет WebSMS настроек');
    expect(result.stdout.trimEnd().split('\n').at(-1)).toBe('📊 Итого: проверено предприятий: 5, баланс получен: 3, ошибок: 2');
  });

  it('gives every result and a summary as JSON', async () => {
    const result = await balance('--all', '--json', '--below', '10');
    expect(result.code).toBe(4);
    const body = JSON.parse(result.stdout) as { summary: unknown; threshold: number; results: Array<Record<string, unknown>> };
    expect(body.threshold).toBe(10);
    expect(body.summary).toEqual({ checked: 5, ok: 3, failed: 2, below: 1 });
    expect(body.results.map((r) => [r.enterprise_number, r.ok])).toEqual([
      ['0367', true],
      ['0368', false],
      ['0369', true],
      ['0371', false],
      ['0373', true],
    ]);
    expect(body.results[2]).toMatchObject({ sms: 3.5, viber: 1.25, total: 4.75, below_threshold: true });
    expect(body.results[1]).toMatchObject({ error: { code: 'websms_4' } });
  });

  it('exits 4 when a balance is under the --below threshold, even beside errors, and 0 when all is well', async () => {
    expect((await balance('--all', '--below', '10')).code).toBe(4);
    await env.db.updateTable('enterprises').set({ active: false }).where('number', 'in', ['0368', '0371']).execute();
    try {
      const result = await balance('--all', '--below', '1');
      expect(result.code).toBe(0);
      expect(result.stdout).toContain('📊 Итого: проверено предприятий: 3, баланс получен: 3, ошибок: 0, ниже порога 1 BYN: 0');
    } finally {
      await env.db.updateTable('enterprises').set({ active: true }).where('number', 'in', ['0368', '0371']).execute();
    }
  });

  it('checks enterprises concurrently, never more at once than --concurrency', async () => {
    // Every balance call takes 1.5 s. Four enterprises call WebSMS (0371's settings are malformed):
    // with a bound of 2, two calls start together and the third only once one of them is answered.
    env.sandbox.setLatency(1_500);
    const before = env.sandbox.calls().length;
    try {
      const result = await runCli(env, 'balance', ['--all', '--concurrency', '2'], { WEBSMS_TIMEOUT_MS: '10000' });
      outputs.push(result.all);
      expect(result.code).toBe(3);
      const arrivals = env.sandbox
        .calls()
        .slice(before)
        .filter((c) => c.endpoint === 'balances')
        .map((c) => c.at)
        .sort((x, y) => x - y);
      expect(arrivals).toHaveLength(4);
      const [first, second, third] = arrivals as [number, number, number, number];
      expect(second - first).toBeLessThan(1_000);
      expect(third - first).toBeGreaterThanOrEqual(1_400);
    } finally {
      env.sandbox.setLatency(0);
    }
  });
});

describe('GET /enterprises/{number}/balance', () => {
  const get = async (number: string, query = '') => {
    const response = await fetch(`${apiUrl}/enterprises/${number}/balance${query}`);
    const text = await response.text();
    outputs.push(text);
    return { status: response.status, body: JSON.parse(text) as Record<string, unknown> };
  };

  it('answers the balance as JSON for the CRM', async () => {
    const { status, body } = await get('0367');
    expect(status).toBe(200);
    const { refreshed_at: refreshedAt, age_s: ageS, cached, ...balance } = body;
    expect(balance).toEqual({ enterprise_number: '0367', enterprise_name: 'june', websms_user: DEMO_USER, sms: 39.056508, viber: 0, total: 39.056508, currency: 'BYN' });
    // Where the figures come from: the balance watch's cache (or WebSMS just now), and how old they are.
    expect(Date.parse(refreshedAt as string)).toBeGreaterThan(0);
    expect(ageS).toBeTypeOf('number');
    expect(cached).toBeTypeOf('boolean');
  });

  it('answers 404 with the envelope for unknown, unconfigured and inactive enterprises', async () => {
    for (const number of ['9999', '0370', '0371', '0372']) {
      const { status, body } = await get(number);
      expect(status, number).toBe(404);
      expect(body).toMatchObject({ success: false, error: `Enterprise ${number} not found or has no WebSMS configuration` });
    }
  });

  it('answers 502 with a clear error, and no key, when WebSMS refuses or times out', async () => {
    const refused = await get('0368');
    expect(refused.status).toBe(502);
    expect(refused.body).toMatchObject({ success: false, error_code: 'websms_4' });
    expect(refused.body.error).toMatch(/WebSMS error 4: Invalid user or apikey/);
    env.sandbox.setLatency(env.config.websms.timeoutMs + 2_000);
    try {
      // Asked of WebSMS now, not answered from the cache.
      const slow = await get('0367', '?fresh=true');
      expect(slow.status).toBe(502);
      expect(slow.body).toMatchObject({ success: false, error_code: 'timeout' });
    } finally {
      env.sandbox.setLatency(0);
    }
  });

  it('answers 404 to a caller limited to other enterprises, as for an unknown one', async () => {
    const app = express();
    app.use((_req, res, next) => {
      res.locals.caller = { name: 'crm-0368', enterprises: new Set(['0368']) };
      next();
    });
    const websms = createWebsmsClient({ baseUrl: env.sandbox.url, timeoutMs: 2_000 });
    app.use(balanceRoute({ db: env.db, websms }));
    app.use(errorHandler(env.logger));
    const server = app.listen(0, '127.0.0.1');
    await new Promise((resolve) => server.once('listening', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const response = await fetch(`http://127.0.0.1:${port}/enterprises/0367/balance`);
      expect(response.status).toBe(404);
      expect(await response.json()).toMatchObject({ error: 'Enterprise 0367 not found or has no WebSMS configuration' });
    } finally {
      websms.close();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

describe('the API key', () => {
  it('never appears in any command output, HTTP answer or log line', () => {
    const everything = [...outputs, ...env.logLines()].join('\n');
    expect(outputs.length).toBeGreaterThan(10);
    for (const secret of SECRETS) expect(everything).not.toContain(secret);
  });
});
