import { Queue } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';
import { spawnRole, type ServiceProcess } from '../support/service-processes.ts';
import { createEnterpriseLine } from '../../src/line/enterprise-line.ts';
import { insertPendingMessage, recordFailed } from '../../src/messages/repository.ts';

// A backlog is a line: one enterprise's messages reach WebSMS in acceptance order, each job runs about
// once, the 202's expected send time is honest, and the limit holds as WebSMS's arrival times show it.

const PHONE = '+375296254070';
const LIMIT = 3;
const WINDOW_MS = 1_000;
const MARGIN_MS = 50;
const BACKLOG = 45;
/** Enterprises that send one message each while the backlog drains, and ones that warm the workers up. */
const OTHERS = Array.from({ length: 10 }, (_, i) => `05${String(i).padStart(2, '0')}`);
const WARM_UP = ['0601', '0602', '0603'];

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

describe('a backlog of one enterprise, drained by 3 worker processes', () => {
  let env: TestEnv;
  let baseUrl: string;
  let queue: Queue;
  const workers: ServiceProcess[] = [];

  beforeAll(async () => {
    const settings = {
      RATE_LIMIT_PER_WINDOW: String(LIMIT),
      RATE_LIMIT_WINDOW_MS: String(WINDOW_MS),
      RATE_LIMIT_MARGIN_MS: String(MARGIN_MS),
      SEND_WAIT_MS: '3000',
      WORKER_CONCURRENCY: '8',
    };
    env = await createTestEnv(settings);
    const others = [...OTHERS, ...WARM_UP];
    for (const number of ['0367', '0369', '0370', '0371', ...others]) await env.seedEnterprise({ number, customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    // The API in this process, the workers as the real thing: separate processes sharing one Redis.
    baseUrl = (await env.startService({ workers: 0 })).api!.url;
    const workerEnv = {
      ...settings,
      DATABASE_URL: env.config.databaseUrl,
      REDIS_URL: env.config.redisUrl,
      WEBSMS_BASE_URL: env.config.websms.baseUrl,
      QUEUE_PREFIX: env.config.queuePrefix,
      WEBSMS_TIMEOUT_MS: '2000',
      DATABASE_POOL_SIZE: '3',
    };
    for (let i = 0; i < 3; i++) workers.push(spawnRole('worker', workerEnv, `worker-${i}`));
    await eventually(() => (workers.every((w) => w.output().some((line) => line.includes('"msg":"worker started"'))) ? true : undefined), 60_000, 100);
    queue = new Queue('user-sms-send', { connection: env.redis, prefix: env.config.queuePrefix });
  }, 90_000);
  afterAll(async () => {
    await Promise.all(workers.map((w) => w.stop(10_000)));
    await queue?.close();
    await env?.cleanup();
  });

  it('reaches WebSMS in id order, one job run per message, with honest expected send times and no window over the limit', async () => {
    // Workers that have just started send their first messages slowly (cold connections, code not yet
    // optimised); a service that has been running has not. Warm them up on another enterprise.
    for (const number of [...WARM_UP, ...WARM_UP]) expect((await postJson(baseUrl, '/send', { enterprise_number: number, phone: PHONE, text: 'warm-up' })).status).toBe(200);
    const accepted: Array<{ id: number; expectedAt: number; acceptedAt: number }> = [];
    for (let i = 0; i < BACKLOG; i++) {
      const r = await postJson(baseUrl, '/send', { enterprise_number: '0367', phone: PHONE, text: `line ${i}` }, { Prefer: 'respond-async' });
      expect(r.status).toBe(202);
      accepted.push({ id: r.json.id as number, expectedAt: Date.parse(r.json.expected_send_at as string), acceptedAt: Date.now() });
    }

    // Meanwhile other enterprises' messages go out at once.
    const otherMs: number[] = [];
    for (const number of OTHERS) {
      const started = performance.now();
      const r = await postJson(baseUrl, '/send', { enterprise_number: number, phone: PHONE, text: `other ${number}` });
      otherMs.push(performance.now() - started);
      expect(r.status).toBe(200);
    }

    const rows = await eventually(
      async () => {
        const rows = await env.db.selectFrom('user_sms_send').select(['id', 'status', 'provider_ref']).where('enterprise_number', '=', '0367').execute();
        return rows.length === BACKLOG && rows.every((row) => row.status === 'success') ? rows : undefined;
      },
      BACKLOG * 1_000,
      200,
    );
    const idByRef = new Map(rows.map((row) => [row.provider_ref, Number(row.id)]));
    const arrivals = env.sandbox
      .acceptedSends()
      .filter((call) => idByRef.has(call.customId ?? null))
      .map((call) => ({ id: idByRef.get(call.customId ?? null)!, at: call.at }))
      .sort((a, b) => a.at - b.at);
    expect(arrivals).toHaveLength(BACKLOG);

    // Order: every pair as WebSMS received it.
    let outOfOrder = 0;
    for (let i = 0; i < arrivals.length; i++) for (let j = i + 1; j < arrivals.length; j++) if (arrivals[i]!.id > arrivals[j]!.id) outOfOrder++;
    expect(outOfOrder, `arrival order ${arrivals.map((a) => a.id).join(',')}`).toBe(0);

    // The limit, by WebSMS's clock, against the bare window.
    let overLimit = 0;
    for (let i = 0; i + LIMIT < arrivals.length; i++) if (arrivals[i + LIMIT]!.at - arrivals[i]!.at < WINDOW_MS) overLimit++;
    expect(overLimit).toBe(0);

    // Linear cost: each job ran about once, whatever the line's length.
    const runs = await Promise.all(accepted.map(async ({ id }) => (await queue.getJob(`m${id}`))!.attemptsStarted));
    const runsPerMessage = runs.reduce((a, b) => a + b, 0) / runs.length;
    expect(runsPerMessage).toBeLessThanOrEqual(1.5);

    // Honest ETAs: the 202's expected_send_at against WebSMS's arrival time.
    const arrivalById = new Map(arrivals.map((a) => [a.id, a.at]));
    const errors = accepted.map(({ id, expectedAt }) => Math.abs(arrivalById.get(id)! - expectedAt));
    const drainMs = arrivals.at(-1)!.at - arrivals[0]!.at;
    // The worst, signed (late > 0), by place in the backlog: a slip before the first sends shows on the first ones only.
    const worst = accepted
      .map(({ id, expectedAt }, place) => ({ place, lateMs: arrivalById.get(id)! - expectedAt }))
      .sort((a, b) => Math.abs(b.lateMs) - Math.abs(a.lateMs))
      .slice(0, 5)
      .map(({ place, lateMs }) => `#${place} ${lateMs > 0 ? '+' : ''}${lateMs} ms`);
    const allowedMs = (Math.ceil(BACKLOG / LIMIT) - 1) * (WINDOW_MS + MARGIN_MS);
    console.info(
      `backlog of ${BACKLOG}: runs per message ${runsPerMessage.toFixed(2)} (max ${Math.max(...runs)}), pairs out of order ${outOfOrder}, ` +
        `windows over the limit ${overLimit}, ETA error p50 ${percentile(errors, 50)} ms p95 ${percentile(errors, 95)} ms max ${Math.max(...errors)} ms (worst ${worst.join(', ')}), ` +
        `drained in ${drainMs} ms (window + margin allow ${allowedMs} ms), other enterprises' sends p50 ${percentile(otherMs, 50).toFixed(0)} ms max ${Math.max(...otherMs).toFixed(0)} ms`,
    );
    // Within one round of the line, a window and its margin (the 40 s a crowd of waking jobs gave, and
    // any wrong position or window, are far outside it). The 500 ms p95 target itself is a figure of
    // the benchmark (`npm run bench -- --phases lines`): on a loaded machine every round stretches by
    // the load, and a send that comes late in its round moves every message behind it in the line by
    // up to a round, which a tighter assertion here would report as a failure of the code.
    expect(percentile(errors, 95)).toBeLessThanOrEqual(WINDOW_MS + MARGIN_MS);
    // Other enterprises' sends are not behind the line (which takes 15 windows to drain).
    expect(Math.max(...otherMs)).toBeLessThan(3 * WINDOW_MS);
  }, 120_000);

  it('answers a waiting caller 202 at once when its message cannot go before the wait would end', async () => {
    // Fill the line of 0369 past SEND_WAIT_MS (3 s): 3 per second, so 15 messages take 5 s.
    for (let i = 0; i < 15; i++) await postJson(baseUrl, '/send?wait=false', { enterprise_number: '0369', phone: PHONE, text: `fill ${i}` });
    const started = performance.now();
    const r = await postJson(baseUrl, '/send', { enterprise_number: '0369', phone: PHONE, text: 'late' });
    const tookMs = performance.now() - started;
    expect(r.status).toBe(202);
    expect(Date.parse(r.json.expected_send_at as string)).toBeGreaterThan(Date.now() + 3_000 - 500);
    console.info(`immediate 202 for a message expected in ${Date.parse(r.json.expected_send_at as string) - Date.now()} ms: answered in ${tookMs.toFixed(0)} ms`);
    expect(tookMs).toBeLessThan(1_000);
  });

  it('GET /messages/{id} shows a waiting message its position and expected time, and a cancel ahead of it moves it up a round', async () => {
    // 3 per window: the first three go at once, the next three one window later, the seventh two windows later.
    const answers: Array<Record<string, unknown>> = [];
    for (let i = 0; i < 7; i++) answers.push((await postJson(baseUrl, '/send?wait=false', { enterprise_number: '0370', phone: PHONE, text: `cancel line ${i}` })).json);
    const read = async (answer: Record<string, unknown>) => (await (await fetch(`${baseUrl}${String(answer.status_url)}`)).json()) as Record<string, unknown>;
    const last = answers[6]!;
    const before = await read(last);
    expect(before).toMatchObject({ status: 'queued', position: expect.any(Number) as number });
    expect(before.position as number).toBeGreaterThanOrEqual(3);
    const beforeAt = Date.parse(before.expected_send_at as string);
    expect(beforeAt).toBeGreaterThan(Date.now() + WINDOW_MS);

    const cancelled = await fetch(`${baseUrl}${String(answers[4]!.status_url)}`, { method: 'DELETE' });
    expect(cancelled.status).toBe(200);
    const after = await read(last);
    expect(after.position).toBe((before.position as number) - 1);
    const afterAt = Date.parse(after.expected_send_at as string);
    // One round earlier: a window (+ margin) sooner, give or take the spacing inside a round.
    expect(beforeAt - afterAt).toBeGreaterThan(WINDOW_MS - 200);

    await eventually(async () => ((await read(last)).status === 'success' ? true : undefined), 10_000, 100);
    const sent = env.sandbox.acceptedSends().filter((call) => call.text?.startsWith('cancel line'));
    expect(sent.map((call) => call.text)).toEqual([0, 1, 2, 3, 5, 6].map((i) => `cancel line ${i}`));
    const arrivedAt = sent.at(-1)!.at;
    console.info(`after a cancel ahead: expected ${afterAt - arrivedAt} ms from WebSMS's arrival time (before the cancel: ${beforeAt - arrivedAt} ms)`);
    expect(Math.abs(arrivedAt - afterAt)).toBeLessThan(500);
  });

  it('a message closed without leaving its line (no job, row failed) does not hold the line up for good', async () => {
    // A message in the line whose row was closed and whose job is gone: what a cancel leaves behind
    // when Redis could not be told, or an enqueue cut off between its two steps.
    const stuck = await insertPendingMessage(env.db, { enterpriseNumber: '0371', enterpriseName: null, phone: PHONE, text: 'stuck', sender: 'Vochi-CRM', customId: null, serviceName: null, requestIp: null, userAgent: null });
    const line = createEnterpriseLine(env.redis, { keyPrefix: env.config.queuePrefix, limit: LIMIT, windowMs: WINDOW_MS, marginMs: MARGIN_MS, turnTtlMs: 10_000 });
    await line.join('0371', stuck);
    await recordFailed(env.db, stuck, { code: 'cancelled', message: 'closed behind the line' });

    const started = Date.now();
    const r = await postJson(baseUrl, '/send?wait=false', { enterprise_number: '0371', phone: PHONE, text: 'behind the stuck one' });
    expect(r.status).toBe(202);
    await eventually(() => (env.sandbox.acceptedSends().some((c) => c.text === 'behind the stuck one') ? true : undefined), 10 * WINDOW_MS, 100);
    console.info(`a closed message at the head of its line was taken out after ${Date.now() - started} ms`);
    expect(workers.flatMap((w) => w.output()).some((l) => l.includes('line head is no longer waiting') && l.includes(`"messageId":${stuck}`))).toBe(true);
    expect(env.sandbox.acceptedSends().some((c) => c.text === 'stuck')).toBe(false);
  });
});
