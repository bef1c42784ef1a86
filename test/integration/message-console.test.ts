import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sql } from 'kysely';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { maskPhone } from '../../src/logger.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';
import { findTool, skipWithoutTool } from '../support/tools.ts';

// The message console (/admin/messages) in a real headless browser: Debian's chromium driven by
// playwright-core, against the real HTTP server, PostgreSQL, Redis, a worker and the WebSMS sandbox.

const ARTEFACTS = fileURLToPath(new URL('../../test-results/message-console/', import.meta.url));
const ADMIN = { user: 'ops', password: 'console-pass-5Tz' };
const AS_ADMIN = { authorization: `Basic ${Buffer.from(`${ADMIN.user}:${ADMIN.password}`).toString('base64')}` };
const PHONE = '+375296254070';
const QUEUED_PHONE = '+375296254071';
const CALLBACK_SECRET = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
/** What a stored text, sender or error would do if any of it reached the page as markup. */
const XSS_TEXT = `<script>globalThis.__xss = 'text'; alert('text')</script><img src=x onerror="globalThis.__xss = 'img'; alert('img')">`;
/** An unclosed script tag: unescaped, it would swallow the rest of the page (the column holds 11 characters). */
const XSS_SENDER = '<script>';
const XSS_ERROR = `"><svg onload="globalThis.__xss = 'error'; alert('error')">`;

const chromiumPath = findTool('chromium');

async function launch(userDataDir: string): Promise<BrowserContext> {
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: chromiumPath!,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    httpCredentials: { username: ADMIN.user, password: ADMIN.password },
  });
}

/** A page that records every dialog (alert, confirm) and script error it meets: none may happen. */
async function watchedPage(context: BrowserContext): Promise<{ page: Page; dialogs: string[]; errors: string[] }> {
  const page = await context.newPage();
  const dialogs: string[] = [];
  const errors: string[] = [];
  page.on('dialog', (dialog) => {
    dialogs.push(dialog.message());
    void dialog.dismiss();
  });
  page.on('pageerror', (error) => errors.push(error.message));
  return { page, dialogs, errors };
}

const xssFlag = (page: Page) => page.evaluate(() => (globalThis as { __xss?: unknown }).__xss ?? null);

async function get(url: string, headers: Record<string, string> = {}) {
  const response = await fetch(url, { headers, redirect: 'manual' });
  return { status: response.status, text: await response.text(), headers: response.headers };
}

describe('the message console in a real browser', () => {
  if (skipWithoutTool('chromium', chromiumPath, 'chromium', 'message console browser')) return;

  let userDataDir: string;
  let browser: BrowserContext;

  beforeAll(async () => {
    mkdirSync(ARTEFACTS, { recursive: true });
    userDataDir = mkdtempSync(join(tmpdir(), 'user-sms-console-chromium-'));
    browser = await launch(userDataDir);
  });
  afterAll(async () => {
    await browser?.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  });

  describe('with operator credentials and actions allowed (DASHBOARD_READ_ONLY=false)', () => {
    let env: TestEnv;
    let baseUrl: string;
    let receiver: Server;
    const ids = { sent: 0, queued: 0, hostile: 0 };
    let websmsMessageId = '';

    beforeAll(async () => {
      // Callbacks go to a receiver that is always down: the story shows their failed attempts.
      receiver = createServer((_req, res) => res.writeHead(503).end());
      await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
      const receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/sms-events`;
      env = await createTestEnv(
        {
          ADMIN_USER: ADMIN.user,
          ADMIN_PASSWORD: ADMIN.password,
          DASHBOARD_READ_ONLY: 'false',
          // One send a minute: the second message waits in line, to be cancelled from the console.
          RATE_LIMIT_PER_WINDOW: '1',
          SEND_WAIT_MS: '3000',
          DELIVERY_POLL_SCHEDULE_MS: '100,300,1000',
          DELIVERY_POLL_INTERVAL_MS: '100',
          CALLBACK_ALLOWED_HOSTS: '127.0.0.1',
          CALLBACK_SIGNING_SECRET: CALLBACK_SECRET,
          CALLBACK_RETRY_BACKOFF_MS: '50',
          CALLBACK_RETRY_FOR_S: '1',
          CALLBACK_TIMEOUT_MS: '400',
        },
        { sandbox: { deliveryMs: 0 } },
      );
      await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
      baseUrl = (await env.startService({ workers: 1 })).api!.url;

      const sent = await postJson(baseUrl, '/send', { enterprise_number: '0367', phone: PHONE, text: 'Ваш заказ готов', custom_id: 'order-42', callback_url: receiverUrl });
      expect(sent.status, sent.text).toBe(200);
      ids.sent = sent.json.id as number;
      websmsMessageId = String(sent.json.message_id);
      const queued = await postJson(baseUrl, '/send?wait=false', { enterprise_number: '0367', phone: QUEUED_PHONE, text: 'waits its turn' });
      expect(queued.status, queued.text).toBe(202);
      ids.queued = queued.json.id as number;

      // Stored by the old service or any writer: texts and senders are whatever they were.
      const hostile = await sql<{ id: string }>`
        INSERT INTO user_sms_send (enterprise_number, enterprise_name, phone, text, sender, custom_id, status, attempts, error_message, error_code, response_data)
        VALUES ('0999', ${XSS_SENDER}, '+375330000100', ${XSS_TEXT}, ${XSS_SENDER}, '<i>x</i>', 'failed', 1, ${XSS_ERROR}, 'websms_100',
          ${JSON.stringify({ status: false, error: XSS_ERROR, api_key: 'never-shown' })}::jsonb)
        RETURNING id`.execute(env.db);
      ids.hostile = Number(hostile.rows[0]!.id);

      // The first message's story is complete: delivered, and its callbacks given up.
      await eventually(async () => {
        const row = await env.db.selectFrom('user_sms_send').select('delivery_status').where('id', '=', String(ids.sent)).executeTakeFirst();
        const events = await sql<{ status: string }>`SELECT status FROM callback_events WHERE message_id = ${String(ids.sent)}`.execute(env.db);
        return row?.delivery_status === 'delivered' && events.rows.length >= 2 && events.rows.every((e) => e.status === 'given_up') ? true : undefined;
      }, 30_000);
    });
    afterAll(async () => {
      await env?.cleanup();
      await new Promise<void>((resolve) => (receiver ? receiver.close(() => resolve()) : resolve()));
    });

    it('answers 401 with a Basic challenge without credentials or with wrong ones, on every console page', async () => {
      const wrong = { authorization: `Basic ${Buffer.from(`${ADMIN.user}:wrong-password`).toString('base64')}` };
      for (const headers of [{}, wrong]) {
        for (const path of ['/admin/messages', `/admin/messages/${ids.sent}`, '/admin/messages?enterprise=0367']) {
          const answer = await get(`${baseUrl}${path}`, headers);
          expect(answer.status, path).toBe(401);
          expect(answer.headers.get('www-authenticate')).toMatch(/^Basic realm=/);
          expect(answer.text).not.toContain('0367');
        }
      }
      const post = await fetch(`${baseUrl}/admin/messages/${ids.queued}/cancel`, { method: 'POST' });
      expect(post.status).toBe(401);
    });

    it('finds messages by enterprise, phone, custom_id, WebSMS message_id, id and time range; phones masked unless searched exactly', async () => {
      const { page, dialogs } = await watchedPage(browser);
      const first = await page.goto(`${baseUrl}/admin/messages`);
      expect(first?.status()).toBe(200);

      await page.getByLabel('Enterprise').fill('0367');
      await page.getByRole('button', { name: 'Search' }).click();
      await page.waitForURL(/enterprise=0367/);
      const rows = page.locator('table tbody tr');
      await expect.poll(() => rows.count()).toBe(2);
      const listed = await page.locator('table').innerText();
      expect(listed).toContain(maskPhone(PHONE));
      expect(listed).not.toContain(PHONE);
      expect(listed).not.toContain(QUEUED_PHONE);

      await page.getByLabel('Enterprise').fill('');
      await page.getByLabel('Phone').fill('+375 (29) 625-40-70');
      await page.getByRole('button', { name: 'Search' }).click();
      await page.waitForURL(/phone=/);
      await expect.poll(() => rows.count()).toBe(1);
      expect(await rows.first().innerText()).toContain(PHONE);

      // The exact number opens the story with the number in full; without it, masked.
      await rows.first().getByRole('link', { name: String(ids.sent) }).click();
      await page.waitForURL(new RegExp(`/admin/messages/${ids.sent}\\?phone=`));
      expect(await page.locator('main').innerText()).toContain(PHONE);
      await page.goto(`${baseUrl}/admin/messages/${ids.sent}`);
      expect(await page.locator('main').innerText()).not.toContain(PHONE);

      const found = async (query: string) => {
        const response = await page.goto(`${baseUrl}/admin/messages?${query}`);
        expect(response?.status(), query).toBe(200);
        return page.locator('table tbody tr td:first-child').allInnerTexts();
      };
      expect(await found('custom_id=order-42')).toEqual([String(ids.sent)]);
      expect(await found(`message_id=${websmsMessageId}`)).toEqual([String(ids.sent)]);
      expect(await found(`id=${ids.queued}`)).toEqual([String(ids.queued)]);
      expect(await found('enterprise=0367&custom_id=nothing-like-it')).toEqual([]);
      expect(await page.getByRole('status').innerText()).toBe('No messages found.');

      // Time range, in the server's wall time as created_at stores it (as a datetime-local input sends it).
      const wallNow = (await sql<{ now: string }>`SELECT to_char(localtimestamp, 'YYYY-MM-DD"T"HH24:MI') AS now`.execute(env.db)).rows[0]!.now;
      const hourAgo = (await sql<{ t: string }>`SELECT to_char(localtimestamp - interval '1 hour', 'YYYY-MM-DD"T"HH24:MI') AS t`.execute(env.db)).rows[0]!.t;
      expect(await found(`enterprise=0367&from=${hourAgo}&to=${wallNow}`)).toEqual([String(ids.queued), String(ids.sent)]);
      expect(await found(`from=2001-01-01T00:00&to=2001-01-02T00:00`)).toEqual([]);
      expect(dialogs).toEqual([]);
      await page.close();
    });

    it("tells a message's whole story: accepted, sent, WebSMS's answer, delivery, callbacks; with a screenshot", async () => {
      const { page, dialogs } = await watchedPage(browser);
      const response = await page.goto(`${baseUrl}/admin/messages/${ids.sent}`);
      expect(response?.status()).toBe(200);
      const headers = response!.headers();
      expect(headers['content-security-policy']).toMatch(/default-src 'none'/);
      expect(headers['content-security-policy']).toMatch(/frame-ancestors 'none'/);
      expect(headers['content-security-policy']).not.toMatch(/script-src/);
      expect(headers['x-content-type-options']).toBe('nosniff');
      expect(headers['referrer-policy']).toBe('same-origin');

      expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe(`Message ${ids.sent}: success`);
      for (const heading of ['Accepted', 'In line', 'Sent to WebSMS', "WebSMS's answer", 'Delivery', 'Callbacks', 'Operator actions']) {
        expect(await page.getByRole('heading', { level: 2, name: heading, exact: true }).isVisible(), heading).toBe(true);
      }
      const story = await page.locator('main').innerText();
      expect(story).toContain('Ваш заказ готов');
      expect(story).toContain('order-42');
      expect(story).toContain(websmsMessageId);
      expect(story).toMatch(/Status\s+delivered/);
      expect(story).toMatch(/3 \(delivered\)/);
      expect(story).toContain('message.sent');
      expect(story).toContain('given_up');
      expect(story).toContain('HTTP 503');
      expect(story).not.toContain(DEMO_KEY);
      expect(await page.locator('script').count()).toBe(0);
      // Read-only buttons: a sent message can be neither cancelled nor retried.
      expect(await page.locator('form[method=post]').count()).toBe(0);
      await page.screenshot({ path: join(ARTEFACTS, 'message-story.png'), fullPage: true });
      expect(dialogs).toEqual([]);
      await page.close();
    });

    it('shows a stored <script> text, sender and error as text: no script runs, no dialog opens', async () => {
      const { page, dialogs, errors } = await watchedPage(browser);
      const response = await page.goto(`${baseUrl}/admin/messages/${ids.hostile}`);
      expect(response?.status()).toBe(200);
      const story = await page.locator('main').innerText();
      expect(story).toContain(XSS_TEXT);
      expect(story).toContain(XSS_SENDER);
      expect(story).toContain(XSS_ERROR);
      expect(story).not.toContain('never-shown');
      expect(await page.locator('script, svg, main img').count()).toBe(0);
      expect(await xssFlag(page)).toBeNull();

      await page.goto(`${baseUrl}/admin/messages?enterprise=0999`);
      await expect.poll(() => page.locator('table tbody tr').count()).toBe(1);
      expect(await page.locator('table').innerText()).toContain(XSS_SENDER);
      expect(await page.locator('script, svg, main img').count()).toBe(0);
      expect(await xssFlag(page)).toBeNull();
      await page.screenshot({ path: join(ARTEFACTS, 'hostile-texts.png'), fullPage: true });
      expect(dialogs).toEqual([]);
      expect(errors).toEqual([]);
      await page.close();
    });

    it('cancels a waiting message with its button, through the same path as the jobs CLI, recorded on the row', async () => {
      const { page } = await watchedPage(browser);
      await page.goto(`${baseUrl}/admin/messages/${ids.queued}`);
      expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe(`Message ${ids.queued}: queued`);
      const line = await page.getByRole('region', { name: 'In line' }).innerText();
      expect(line).toMatch(/Position\s+0: next/);
      expect(line).toMatch(/Expected send\s+\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}/);
      expect(await page.getByRole('button', { name: 'Retry this message' }).count()).toBe(0);

      await page.getByRole('button', { name: 'Cancel this message' }).click();
      await page.waitForURL(/done=cancel/);
      expect(await page.getByRole('status').innerText()).toBe('Cancelled: it will not be sent.');
      expect(await page.getByRole('heading', { level: 1 }).innerText()).toBe(`Message ${ids.queued}: failed`);
      expect(await page.getByRole('button', { name: 'Cancel this message' }).count()).toBe(0);
      expect(await page.getByRole('region', { name: 'Operator actions' }).innerText()).toContain(`operator ${ADMIN.user} (console)`);

      const row = await env.db.selectFrom('user_sms_send').select(['status', 'error_code', 'operator_actions']).where('id', '=', String(ids.queued)).executeTakeFirstOrThrow();
      expect(row.status).toBe('failed');
      expect(row.error_code).toBe('cancelled');
      expect(row.operator_actions).toMatchObject([{ action: 'cancel', by: `operator ${ADMIN.user} (console)`, from: 'queued', to: 'failed' }]);
      // Reloading the page after the redirect does not cancel again.
      await page.reload();
      expect((await env.db.selectFrom('user_sms_send').select('operator_actions').where('id', '=', String(ids.queued)).executeTakeFirstOrThrow()).operator_actions).toHaveLength(1);
      await page.close();
    });

    it('retries a failed message with its button (the jobs CLI retry), recorded on the row', async () => {
      const { page } = await watchedPage(browser);
      await page.goto(`${baseUrl}/admin/messages/${ids.hostile}`);
      await page.getByRole('button', { name: 'Retry this message' }).click();
      await page.waitForURL(/done=retry/);
      expect(await page.getByRole('status').innerText()).toMatch(/^Retried/);
      const entries = await eventually(async () => {
        const row = await env.db.selectFrom('user_sms_send').select('operator_actions').where('id', '=', String(ids.hostile)).executeTakeFirstOrThrow();
        return (row.operator_actions as unknown[]).length > 0 ? row.operator_actions : undefined;
      });
      expect(entries).toMatchObject([{ action: 'retry', from: 'failed', to: 'queued' }]);
      expect(await xssFlag(page)).toBeNull();
      await page.close();
    });

    it('refuses a POST that did not come from a console page: another site, no token, a wrong token', async () => {
      const before = await env.db.selectFrom('user_sms_send').select(['status', 'operator_actions']).where('id', '=', String(ids.sent)).executeTakeFirstOrThrow();
      const attempts: Array<Record<string, string>> = [
        { 'sec-fetch-site': 'cross-site', origin: 'https://evil.example' },
        { origin: 'https://evil.example' },
        {},
        { cookie: 'user_sms_console_csrf=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' },
      ];
      for (const headers of attempts) {
        const response = await fetch(`${baseUrl}/admin/messages/${ids.sent}/retry`, {
          method: 'POST',
          headers: { ...AS_ADMIN, 'content-type': 'application/x-www-form-urlencoded', ...headers },
          body: 'csrf=BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB',
          redirect: 'manual',
        });
        expect(response.status, JSON.stringify(headers)).toBe(403);
        expect(response.headers.get('content-security-policy')).toMatch(/frame-ancestors 'none'/);
      }
      const after = await env.db.selectFrom('user_sms_send').select(['status', 'operator_actions']).where('id', '=', String(ids.sent)).executeTakeFirstOrThrow();
      expect(after).toEqual(before);
    });

    it('answers hostile search parameters and paths with a 4xx or an empty result, never a 5xx', async () => {
      const queries = [
        "id=1'%20OR%20'1'='1",
        'id=1;DROP%20TABLE%20user_sms_send',
        'enterprise=0367%27--',
        "enterprise=%27%20OR%201=1--",
        'custom_id=%25',
        'custom_id=_',
        'phone=%2B375%27%20OR%20%271%27=%271',
        'phone=375296254070',
        'message_id=99999999999999999999999999',
        'message_id=-1',
        'id=0',
        'id=1e5',
        'from=2020-02-30T10:00',
        'from=not-a-date',
        'from=0001-01-01T00:00&to=9999-12-31T23:59',
        'from=2000-01-01T00:00&to=2099-12-31T23:59',
        'from=2026-12-02T10:00&to=2026-12-01T10:00',
        'to=2026-13-01',
        'enterprise=%00',
        'custom_id=%E2%80%AE%F0%9F%98%80%F0%9F%98%80',
        'custom_id=%ED%A0%80',
        'enterprise=%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80%F0%9F%98%80',
        `enterprise=${'x'.repeat(5000)}`,
        'enterprise=0367&enterprise=0368',
        'enterprise[$ne]=1',
        'before=abc',
        'before=999999999999',
        '__proto__=1&constructor=2',
      ];
      for (const query of queries) {
        const answer = await get(`${baseUrl}/admin/messages?${query}`, AS_ADMIN);
        expect(answer.status, query).toBeLessThan(500);
        if (answer.status === 200) expect(answer.text, query).not.toMatch(/<tbody>[\s\S]*<tr>/);
        else expect(answer.status, query).toBeGreaterThanOrEqual(400);
        expect(answer.headers.get('x-content-type-options'), query).toBe('nosniff');
      }
      const paths = [
        '/admin/messages/..%2F..%2Fetc%2Fpasswd',
        '/admin/messages/%2E%2E%2Fmetrics',
        '/admin/messages/1%00',
        '/admin/messages/%ff',
        '/admin/messages/-1',
        '/admin/messages/0',
        '/admin/messages/1e3',
        '/admin/messages/99999999999999999999',
        '/admin/messages/999999999',
        `/admin/messages/${ids.sent}%20OR%201=1`,
        `/admin/messages/${ids.sent}/delete`,
      ];
      for (const path of paths) {
        const answer = await get(`${baseUrl}${path}`, AS_ADMIN);
        expect(answer.status, path).toBeGreaterThanOrEqual(400);
        expect(answer.status, path).toBeLessThan(500);
      }

      // And through the form, in the browser: the page says what is wrong, and searches nothing.
      const { page } = await watchedPage(browser);
      await page.goto(`${baseUrl}/admin/messages`);
      await page.getByLabel('Message id', { exact: true }).fill("1' OR '1'='1");
      await page.getByLabel('Phone').fill('<script>alert(1)</script>');
      const response = await Promise.all([page.waitForResponse((r) => r.url().includes('?')), page.getByRole('button', { name: 'Search' }).click()]);
      expect(response[0].status()).toBe(400);
      expect(await page.getByRole('alert').innerText()).toContain('Nothing was searched');
      expect(await page.getByLabel('Phone').inputValue()).toBe('<script>alert(1)</script>');
      expect(await xssFlag(page)).toBeNull();
      await page.close();
    });
  });

  describe('read-only (the default) and without operator credentials: a direct local peer is the operator', () => {
    let env: TestEnv;
    let baseUrl: string;
    let waiting = 0;

    beforeAll(async () => {
      env = await createTestEnv();
      await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
      // No worker: the message stays queued, the very case a cancel button would be offered for.
      baseUrl = (await env.startService({ workers: 0 })).api!.url;
      const queued = await postJson(baseUrl, '/send?wait=false', { enterprise_number: '0367', phone: PHONE, text: 'stays in line' });
      expect(queued.status, queued.text).toBe(202);
      waiting = queued.json.id as number;
    });
    afterAll(async () => {
      await env?.cleanup();
    });

    it('shows the message without any button, and refuses actions with 405', async () => {
      const { page } = await watchedPage(browser);
      const response = await page.goto(`${baseUrl}/admin/messages/${waiting}`);
      expect(response?.status()).toBe(200);
      expect(await page.getByRole('heading', { level: 1 }).innerText()).toMatch(new RegExp(`^Message ${waiting}: (pending|queued)$`));
      expect(await page.locator('form[method=post]').count()).toBe(0);
      expect(await page.getByRole('button').count()).toBe(0);
      await page.close();

      const post = await fetch(`${baseUrl}/admin/messages/${waiting}/cancel`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'csrf=x' });
      expect(post.status).toBe(405);
      const row = await env.db.selectFrom('user_sms_send').select(['status', 'operator_actions']).where('id', '=', String(waiting)).executeTakeFirstOrThrow();
      expect(['pending', 'queued']).toContain(row.status);
      expect(row.operator_actions).toEqual([]);
    });

    it('is not found (404) through a proxy or from another host, as if it did not exist', async () => {
      for (const path of ['/admin/messages', `/admin/messages/${waiting}`, `/admin/messages?phone=${encodeURIComponent(PHONE)}`]) {
        for (const headers of [{ 'x-forwarded-for': '203.0.113.9' }, { 'x-real-ip': '203.0.113.9' }] as Array<Record<string, string>>) {
          const answer = await get(`${baseUrl}${path}`, headers);
          expect(answer.status, path).toBe(404);
          expect(answer.text).not.toContain('stays in line');
          expect(answer.text).not.toContain('0367');
        }
      }
    });
  });
});
