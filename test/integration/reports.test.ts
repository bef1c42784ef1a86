import { sql, type RawBuilder } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli } from '../support/cli.ts';
import { createTestEnv, type TestEnv } from '../support/context.ts';

// Every report's SQL on rows with known created_at values around the old queries' boundaries
// (today, 7 and 30 days back), through `npm run report` and GET /reports/<name>.

const ADMIN = { ADMIN_USER: 'ops', ADMIN_PASSWORD: 'correct-horse-battery' };
const AUTH = `Basic ${Buffer.from(`${ADMIN.ADMIN_USER}:${ADMIN.ADMIN_PASSWORD}`).toString('base64')}`;
const PHONE = '+375296254070';
const MASKED = '+37529*****70';
const LONG_TEXT = 'Ваш заказ №12345 готов к выдаче. Пункт выдачи работает с 9 до 21, без выходных.';
const NOT_FOUND = 'Enterprise 0999 not found or has no WebSMS configuration';

let env: TestEnv;
let apiUrl: string;
const ids: Record<string, number> = {};

interface SeedRow {
  key: string;
  enterprise: string;
  name: string | null;
  status: string;
  createdAt: RawBuilder<unknown>;
  text?: string;
  amount?: number;
  parts?: number;
  error?: string;
  errorCode?: string;
  service?: string;
  ip?: string;
  userAgent?: string;
}

// Today's rows sit seconds after midnight, so "today" holds whenever the test runs.
const today = (seconds: number) => sql`CURRENT_DATE + make_interval(secs => ${seconds})`;
const daysAgo = (days: number) => sql`CURRENT_DATE - make_interval(days => ${days}) + interval '12 hours'`;

const ROWS: SeedRow[] = [
  { key: 'june1', enterprise: '0367', name: 'june', status: 'success', createdAt: today(1), amount: 0.014732, parts: 1 },
  { key: 'june2', enterprise: '0367', name: 'june', status: 'success', createdAt: today(2), amount: 0.029464, parts: 2, text: LONG_TEXT },
  { key: 'june3', enterprise: '0367', name: 'june', status: 'failed', createdAt: today(3), error: 'WebSMS error 100: Invalid phone number', errorCode: 'websms_100' },
  { key: 'june4', enterprise: '0367', name: 'june', status: 'queued', createdAt: today(4) },
  { key: 'june5', enterprise: '0367', name: 'june', status: 'unknown', createdAt: today(5), error: 'Outcome unknown; lookup failed', errorCode: 'lookup_failed' },
  { key: 'may1', enterprise: '0368', name: 'may', status: 'success', createdAt: today(6), amount: 0.014732, parts: 1 },
  { key: 'nf1', enterprise: '0999', name: null, status: 'failed', createdAt: today(7), error: NOT_FOUND, errorCode: 'enterprise_not_found', service: 'crm', ip: '10.0.0.5', userAgent: 'crm/1.0' },
  { key: 'nf2', enterprise: '0999', name: null, status: 'failed', createdAt: today(8), error: NOT_FOUND, errorCode: 'enterprise_not_found', service: 'crm', ip: '10.0.0.5', userAgent: 'crm/1.0' },
  { key: 'nf3', enterprise: '0999', name: null, status: 'failed', createdAt: today(9), error: NOT_FOUND, errorCode: 'enterprise_not_found', service: 'billing', ip: '10.0.0.6', userAgent: 'curl/8.5' },
  { key: 'juneYesterday', enterprise: '0367', name: 'june', status: 'success', createdAt: daysAgo(1), amount: 0.014732, parts: 1 },
  { key: 'nf6days', enterprise: '0999', name: null, status: 'failed', createdAt: daysAgo(6), error: NOT_FOUND, errorCode: 'enterprise_not_found', service: 'crm', ip: '10.0.0.5', userAgent: 'crm/1.0' },
  { key: 'nf8days', enterprise: '0999', name: null, status: 'failed', createdAt: daysAgo(8), error: NOT_FOUND, errorCode: 'enterprise_not_found', service: 'crm', ip: '10.0.0.5', userAgent: 'crm/1.0' },
  { key: 'may10days', enterprise: '0368', name: 'may', status: 'success', createdAt: daysAgo(10), amount: 0.058928, parts: 4 },
  { key: 'june40days', enterprise: '0367', name: 'june', status: 'success', createdAt: daysAgo(40), amount: 1, parts: 1 },
];

async function seed(row: SeedRow): Promise<void> {
  const result = await sql<{ id: string }>`
    INSERT INTO user_sms_send
      (enterprise_number, enterprise_name, phone, text, status, amount, parts, error_message, error_code, service_name, request_ip, user_agent, created_at)
    VALUES
      (${row.enterprise}, ${row.name}, ${PHONE}, ${row.text ?? `text ${row.key}`}, ${row.status}, ${row.amount ?? null}, ${row.parts ?? null},
       ${row.error ?? null}, ${row.errorCode ?? null}, ${row.service ?? null}, ${row.ip ?? null}, ${row.userAgent ?? null}, ${row.createdAt})
    RETURNING id`.execute(env.db);
  ids[row.key] = Number(result.rows[0]?.id);
}

const idsOf = (...keys: string[]) => keys.map((k) => ids[k]);

async function reportJson(name: string, ...args: string[]) {
  const result = await runCli(env, 'report', [name, '--json', ...args]);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as Array<Record<string, unknown>>;
}

async function httpReport(path: string, auth: string | null = AUTH) {
  const response = await fetch(`${apiUrl}${path}`, { headers: auth ? { authorization: auth } : {} });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

beforeAll(async () => {
  env = await createTestEnv(ADMIN);
  for (const row of ROWS) await seed(row);
  apiUrl = (await env.startService({ workers: 0 })).api!.url;
});

afterAll(async () => {
  await env?.cleanup();
});

describe('report SQL keeps the old queries’ semantics', () => {
  it('today: per enterprise since CURRENT_DATE, with cost and outcomes, busiest first', async () => {
    expect(await reportJson('today')).toEqual([
      { enterprise_number: '0367', enterprise_name: 'june', sms_count: 5, total_cost: 0.044196, successful: 2, failed: 1, in_progress: 1, unknown: 1 },
      { enterprise_number: '0999', enterprise_name: null, sms_count: 3, total_cost: null, successful: 0, failed: 3, in_progress: 0, unknown: 0 },
      { enterprise_number: '0368', enterprise_name: 'may', sms_count: 1, total_cost: 0.014732, successful: 1, failed: 0, in_progress: 0, unknown: 0 },
    ]);
    expect((await reportJson('today', '--enterprise', '0368')).map((r) => r.enterprise_number)).toEqual(['0368']);
  });

  it('enterprise: that enterprise’s latest messages, newest first, text cut to 50 characters', async () => {
    const rows = await reportJson('enterprise', '--enterprise', '0367');
    expect(rows.map((r) => r.id)).toEqual(idsOf('june5', 'june4', 'june3', 'june2', 'june1', 'juneYesterday', 'june40days'));
    const long = rows.find((r) => r.id === ids.june2)!;
    expect(long).toMatchObject({ phone: PHONE, message_preview: LONG_TEXT.slice(0, 50), status: 'success', amount: 0.029464 });
    expect(Date.parse(long.created_at as string)).not.toBeNaN();
    expect((await reportJson('enterprise', '--enterprise', '0367', '--limit', '2')).map((r) => r.id)).toEqual(idsOf('june5', 'june4'));
  });

  it('recent: the latest sends of all enterprises, labelled "number (name)", with the old DD.MM HH24:MI time', async () => {
    const { rows } = await sql<{ d: string }>`SELECT to_char(CURRENT_DATE, 'DD.MM') AS d`.execute(env.db);
    const rowsOut = await reportJson('recent', '--limit', '4');
    expect(rowsOut.map((r) => r.id)).toEqual(idsOf('nf3', 'nf2', 'nf1', 'may1'));
    expect(rowsOut[3]).toMatchObject({ enterprise: '0368 (may)', phone: PHONE, message: 'text may1', status: 'success', sent_time: `${rows[0]!.d} 00:00` });
    // Without a name the old concatenation gave NULL; the number stays.
    expect(rowsOut[0]).toMatchObject({ enterprise: '0999' });
    expect(await reportJson('recent')).toHaveLength(ROWS.length < 15 ? ROWS.length : 15);
  });

  it('failures: failed messages only, newest first, with the error', async () => {
    const rows = await reportJson('failures');
    expect(rows.map((r) => r.id)).toEqual(idsOf('nf3', 'nf2', 'nf1', 'june3', 'nf6days', 'nf8days'));
    expect(rows[3]).toMatchObject({ enterprise_number: '0367', enterprise_name: 'june', error_message: 'WebSMS error 100: Invalid phone number', error_code: 'websms_100' });
  });

  it('spend: successful messages of the last 30 days per enterprise, biggest spender first', async () => {
    expect(await reportJson('spend')).toEqual([
      { enterprise_number: '0368', enterprise_name: 'may', total_sms: 2, total_spent: 0.07366, avg_cost_per_sms: 0.03683, total_parts: 5 },
      { enterprise_number: '0367', enterprise_name: 'june', total_sms: 3, total_spent: 0.058928, avg_cost_per_sms: 0.019643, total_parts: 4 },
    ]);
  });

  it('audit: attempts for unknown enterprises in the last 7 days, by service, IP and user agent', async () => {
    expect(await reportJson('audit')).toEqual([
      { service_name: 'crm', request_ip: '10.0.0.5', user_agent: 'crm/1.0', count: 3 },
      { service_name: 'billing', request_ip: '10.0.0.6', user_agent: 'curl/8.5', count: 1 },
    ]);
  });
});

describe('npm run report', () => {
  it('prints an aligned table with the old column names, phones in full', async () => {
    const result = await runCli(env, 'report', ['failures', '--limit', '3']);
    expect(result.code).toBe(0);
    const lines = result.stdout.split('\n');
    const header = lines.find((l) => l.includes('enterprise_number'))!;
    expect(header).toMatch(/^ id +\| enterprise_number \| enterprise_name \| phone +\| message +\| error_message +\| created_at/);
    const body = lines.slice(lines.indexOf(header) + 2, lines.indexOf(header) + 5);
    expect(body).toHaveLength(3);
    // Every row's separators line up with the header's.
    const bars = (line: string) => [...line].flatMap((ch, i) => (ch === '|' ? [i] : []));
    for (const line of body) expect(bars(line)).toEqual(bars(header));
    expect(result.stdout).toContain(PHONE);
    expect(result.stdout).toContain('(3 rows)');
  });

  it('exits 2 with the usage for an unknown report or bad parameters', async () => {
    for (const args of [[], ['nonsense'], ['enterprise'], ['audit', '--enterprise', '0367'], ['recent', '--limit', '0'], ['recent', '--limit', 'many']]) {
      const result = await runCli(env, 'report', args);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr).toContain('usage: npm run report');
    }
  });
});

describe('GET /reports/<name>', () => {
  it('needs the operator credentials when they are set', async () => {
    expect((await httpReport('/reports/today', null)).status).toBe(401);
    expect((await httpReport('/reports/today', `Basic ${Buffer.from('ops:wrong').toString('base64')}`)).status).toBe(401);
    expect((await httpReport('/reports/today')).status).toBe(200);
  });

  it('answers the same rows as the command, with phones masked', async () => {
    for (const name of ['enterprise', 'recent', 'failures']) {
      const query = name === 'enterprise' ? '?enterprise=0367' : '';
      const { status, body } = await httpReport(`/reports/${name}${query}`);
      expect(status).toBe(200);
      const cli = await reportJson(name, ...(query ? ['--enterprise', '0367'] : []));
      const rows = body.rows as Array<Record<string, unknown>>;
      expect(rows.map((r) => r.id)).toEqual(cli.map((r) => r.id));
      expect(rows.every((r) => r.phone === MASKED)).toBe(true);
      expect(JSON.stringify(body)).not.toContain(PHONE);
    }
    const { body } = await httpReport('/reports/spend');
    expect(body).toMatchObject({ report: 'spend', enterprise: null, limit: 1000, rows: await reportJson('spend') });
  });

  it('lists the reports, and answers 404 / 400 with the envelope for an unknown report or bad parameters', async () => {
    const catalogue = await httpReport('/reports');
    expect((catalogue.body.reports as Array<{ name: string }>).map((r) => r.name)).toEqual(['today', 'enterprise', 'recent', 'failures', 'spend', 'delivery', 'undelivered', 'audit']);
    const unknown = await httpReport('/reports/nonsense');
    expect(unknown.status).toBe(404);
    expect(unknown.body).toMatchObject({ success: false });
    expect(unknown.body.error).toMatch(/^Unknown report "nonsense"; reports: today, enterprise/);
    const missing = await httpReport('/reports/enterprise');
    expect(missing.status).toBe(400);
    expect(missing.body).toMatchObject({ success: false, errors: [{ field: 'enterprise' }] });
    expect((await httpReport('/reports/recent?limit=100000')).status).toBe(400);
  });
});
