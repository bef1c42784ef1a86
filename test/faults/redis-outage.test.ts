import { beforeAll, describe, expect, it } from 'vitest';
import { acceptedFor, cleanUpAfterAll, createHarness, deliveryViolations, sleep, waitFor, type Harness, type SendResult } from './harness.ts';

// Redis killed and restarted mid-load. The service runs on a redis-server of its own, without
// persistence: the restart loses every job, delayed ones included, and every rate-limit window.
// While Redis is down the API must answer 503 quickly (its Redis commands fail fast: no offline queue)
// and accept nothing silently: each 503 either closed its row as failed (never sent) or says the
// message is stored and will be sent. Workers wait for Redis and send nothing meanwhile (the limiter
// fails closed). Once it is back, the sweeper finds the unfinished rows whose jobs were lost and
// enqueues them again; each is sent once.

/** A request during the outage must be answered within this (the API's Redis timeouts are 3 s). */
const OUTAGE_ANSWER_BOUND_MS = 5_000;

describe('Redis stopped and restarted mid-load: fast 503s while down, nothing lost or doubled after', () => {
  let h: Harness;

  beforeAll(async () => {
    // Two jobs per worker at a time, and WebSMS slow at first: while those four calls are out, every
    // other job waits in Redis and its row is still `pending` when Redis dies.
    // The API reaches that Redis through a proxy (the second test holds its answers); workers directly.
    h = await createHarness({ scenario: 'redis outage', privateRedis: true, apiRedisProxy: true, env: { WORKER_CONCURRENCY: '2', WEBSMS_TIMEOUT_MS: '6000' } });
    await Promise.all([h.startApi(), h.startWorker(), h.startWorker()]);
  });

  cleanUpAfterAll(() => h);

  it('answers 503 fast while Redis is down, then sends every admitted message exactly once', async () => {
    h.sandbox.setLatency(2_500);
    // One at a time, enterprise after enterprise, so the queue's order is known: each enterprise's first
    // message is sent (an enterprise sends one at a time) and the rest wait in their lines.
    const before: SendResult[] = [];
    for (let i = 0; i < 6; i += 1) for (const e of h.enterprises) before.push(await h.send({ enterprise: e, wait: false }));
    for (const answer of before) expect(answer.status, answer.error ?? answer.text).toBe(202);
    const inFlight = h.enterprises.length;
    // On a busy machine the first calls may end before the last message is accepted: then the next of
    // each line is in flight, and fewer wait. What matters is calls in flight and jobs waiting.
    const waitingAtKill = await waitFor('one call in flight per enterprise and the rest of the jobs waiting', 10_000, async () => {
      const rows = await h.rows();
      const waiting = rows.filter((r) => r.status === 'pending' || r.status === 'queued');
      return rows.filter((r) => r.status === 'sending').length === inFlight && waiting.length >= before.length - 2 * inFlight ? waiting.length : undefined;
    });

    await h.redis!.kill();
    const killedAt = Date.now();
    h.sandbox.setLatency(0);

    const during: SendResult[] = [];
    for (let i = 0; i < 6; i += 1) {
      during.push(await h.send({ enterprise: h.enterprises[i % 3], wait: i % 2 === 0, timeoutMs: 15_000 }));
    }
    const health = await fetch(`${h.apiUrl}/health`, { signal: AbortSignal.timeout(15_000) });
    expect(health.status, 'health says unhealthy').toBe(503);
    await sleep(Math.max(0, 6_000 - (Date.now() - killedAt)));
    const restartAt = Date.now();
    await h.redis!.start();

    for (const answer of during) {
      expect(answer.status, `${answer.text}: ${answer.error ?? JSON.stringify(answer.json)}`).toBe(503);
      expect(answer.ms, `${answer.text} answered in ${answer.ms} ms`).toBeLessThan(OUTAGE_ANSWER_BOUND_MS);
      expect(['failed', 'pending']).toContain(answer.json.status);
    }
    // Fail closed: once in-flight calls are done, nothing is sent while Redis is away.
    const sentWhileDown = h.sandbox.calls().filter((c) => c.endpoint === 'send/sms' && c.at > killedAt + 2_000 && c.at < restartAt);
    expect(sentWhileDown, 'sends while the limiter was unreachable').toEqual([]);

    // ioredis reconnects with a backoff (up to 2 s between tries): the API recovers on its own.
    const recoveredInMs = await waitFor('the API to report healthy again', 20_000, async () => {
      const response = await fetch(`${h.apiUrl}/health`, { signal: AbortSignal.timeout(5_000) }).catch(() => undefined);
      await response?.arrayBuffer();
      return response?.status === 200 ? Date.now() - restartAt : undefined;
    });
    expect(recoveredInMs).toBeLessThan(20_000);

    const after: Array<Promise<SendResult>> = [];
    for (let i = 0; i < 2; i += 1) for (const e of h.enterprises) after.push(h.send({ enterprise: e, wait: i === 0, timeoutMs: 20_000 }));
    for (const answer of await Promise.all(after)) expect([200, 202], `${answer.text}: ${answer.status} ${answer.error ?? ''}`).toContain(answer.status);

    const rows = await h.waitAllFinal(90_000);
    const calls = h.sandbox.calls();
    expect(deliveryViolations(rows, calls, h.enterprises)).toEqual([]);

    for (const answer of during) {
      const row = rows.find((r) => Number(r.id) === answer.json.id)!;
      if (answer.json.status === 'failed') {
        // Told "not sent, retry later": it must indeed never go out.
        expect(row).toMatchObject({ status: 'failed', error_code: 'queue_unavailable' });
        expect(acceptedFor(calls, row)).toHaveLength(0);
      } else {
        // Told "stored, will be sent": it must go out, once.
        expect(row.status).toBe('success');
        expect(acceptedFor(calls, row)).toHaveLength(1);
      }
    }
    const admitted = [...before, ...(await Promise.all(after))];
    for (const answer of admitted) {
      const row = rows.find((r) => Number(r.id) === answer.json.id)!;
      expect(row.status, `#${row.id}`).toBe('success');
      expect(acceptedFor(calls, row), `#${row.id} sent exactly once`).toHaveLength(1);
    }
    // The jobs of the rows left waiting died with Redis: only the sweeper can have brought them back.
    const swept = h.logs().filter((line) => line.includes('sweeper re-enqueued'));
    expect(swept.length, 'rows whose jobs Redis lost, re-enqueued by the sweeper').toBeGreaterThanOrEqual(waitingAtKill);
    // Waiting in their lines (`queued`, never attempted): nothing but the rows said they existed.
    expect(swept.filter((line) => line.includes('"status":"queued"')).length, 'among them rows waiting in their lines').toBeGreaterThan(0);
  });

  it('never says "not sent" for a message that is sent: an enqueue that Redis executed but whose answer came too late', async () => {
    // Redis runs the API's command (the job exists, a worker claims it at once and calls WebSMS, which
    // answers slowly), but the answer never reaches the API, whose Redis commands time out after 3 s.
    h.sandbox.setLatency(4_000);
    h.apiRedisProxy!.holdReplies();
    const answer = await h.send({ enterprise: h.enterprises[0], wait: false, timeoutMs: 15_000 });
    const answeredAt = Date.now();
    h.apiRedisProxy!.open();
    h.sandbox.setLatency(0);

    expect(answer.status, `${answer.error ?? JSON.stringify(answer.json)}`).toBe(503);
    expect(answer.ms).toBeLessThan(OUTAGE_ANSWER_BOUND_MS);
    const rows = await h.waitAllFinal(30_000);
    const row = rows.find((r) => Number(r.id) === answer.json.id)!;
    const calls = h.sandbox.calls();
    expect(deliveryViolations(rows, calls, h.enterprises)).toEqual([]);
    const sends = acceptedFor(calls, row);
    // The enqueue's first command puts the message in its enterprise's line; Redis runs it, its answer is
    // held, and the API gives up before adding the job: "not sent" must then be true. Should the job have
    // been added too (the held answer being a later one's), the send is under way and the answer says
    // "stored, will be sent". Either way the answer must match what WebSMS saw.
    const underWay = calls.some((c) => c.endpoint === 'send/sms' && c.customId === row.provider_ref && c.at < answeredAt);
    console.info(`held enqueue: answered ${String(answer.json.status)}; WebSMS called before the answer: ${underWay}`);
    if (answer.json.status === 'failed') {
      expect(sends, `answered "${String(answer.json.error)}" so it must not be sent`).toHaveLength(0);
    } else {
      expect(answer.json.status).toBe('pending');
      expect(row.status).toBe('success');
      expect(sends).toHaveLength(1);
    }
  });
});
