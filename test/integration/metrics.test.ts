import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createRedis, type RedisClient } from '../../src/redis-connection.ts';
import { connectTestRedis } from '../support/test-redis.ts';
import { createMetricsRecorder, metricsKeys, OTHER_ENTERPRISE, readCounters } from '../../src/metrics/metrics-store.ts';
import { readLiveWorkers, startWorkerHeartbeat } from '../../src/metrics/worker-heartbeat.ts';
import type { Running } from '../../src/roles.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';
import { parsePrometheusText, sampleValue, type ParsedFamily } from '../support/prometheus-text.ts';
import { freePort } from '../support/service-processes.ts';

// GET /metrics and /health's worker and backlog fields, through the real HTTP server, PostgreSQL,
// Redis, worker processes' code (in this process) and the WebSMS sandbox.

const ADMIN = { user: 'metrics', password: 'scrape-pass-4Lk' };
const AS_ADMIN = { authorization: `Basic ${Buffer.from(`${ADMIN.user}:${ADMIN.password}`).toString('base64')}` };
const PHONE = '+375296254070';
const CREDENTIALS = `${DEMO_USER} ${DEMO_KEY}`;

describe('GET /metrics', () => {
  let env: TestEnv;
  let baseUrl: string;

  beforeAll(async () => {
    // One send per second per enterprise: a second message right behind the first waits for its slot.
    env = await createTestEnv({ ADMIN_USER: ADMIN.user, ADMIN_PASSWORD: ADMIN.password, RATE_LIMIT_PER_WINDOW: '1', RATE_LIMIT_WINDOW_MS: '1000' });
    await env.seedEnterprise({ number: '0367', name: 'june', customDomain: CREDENTIALS });
    await env.seedEnterprise({ number: '0368', name: 'july', customDomain: CREDENTIALS });
    baseUrl = (await env.startService({ workers: 1 })).api!.url;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  async function scrape(): Promise<{ families: Map<string, ParsedFamily>; text: string }> {
    const response = await fetch(`${baseUrl}/metrics`, { headers: AS_ADMIN });
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain;.*version=0\.0\.4/);
    const text = await response.text();
    return { families: parsePrometheusText(text), text };
  }

  it('answers 401 without the operator credentials', async () => {
    const response = await fetch(`${baseUrl}/metrics`);
    expect(response.status).toBe(401);
    expect(response.headers.get('www-authenticate')).toMatch(/^Basic/);
    expect(await response.text()).not.toContain('user_sms_');
  });

  it('is valid Prometheus text with every documented family, before anything was sent', async () => {
    const { families } = await scrape();
    for (const name of [
      'user_sms_sends_total',
      'user_sms_websms_request_duration_seconds',
      'user_sms_limiter_waits_total',
      'user_sms_limiter_wait_seconds_total',
      'user_sms_queue_jobs',
      'user_sms_queue_oldest_waiting_age_seconds',
      'user_sms_workers_alive',
      'user_sms_worker_jobs_processed_total',
      'user_sms_metrics_source_up',
      'process_cpu_user_seconds_total',
    ]) {
      expect(families.has(name), name).toBe(true);
    }
    expect(families.get('user_sms_websms_request_duration_seconds')!.type).toBe('histogram');
    expect(families.get('user_sms_sends_total')!.type).toBe('counter');
    expect(sampleValue(families, 'user_sms_metrics_source_up', { source: 'counters' })).toBe(1);
    expect(sampleValue(families, 'user_sms_workers_alive')).toBe(1);
  });

  it('counts a send through the API: sends by enterprise and outcome, the WebSMS latency histogram, the queue and the worker', async () => {
    const before = (await scrape()).families;
    const sendsBefore = sampleValue(before, 'user_sms_sends_total', { enterprise: '0367', outcome: 'success' }) ?? 0;
    const callsBefore = sampleValue(before, 'user_sms_websms_request_duration_seconds_count', { result: 'accepted' }) ?? 0;

    const { status, json } = await postJson(baseUrl, '/send', { enterprise_number: '0367', phone: PHONE, text: 'metrics: counted' });
    expect(status).toBe(200);
    expect(json.success).toBe(true);

    // Counters are written after the send, without waiting: they show up shortly after.
    const after = await eventually(async () => {
      const { families } = await scrape();
      return sampleValue(families, 'user_sms_sends_total', { enterprise: '0367', outcome: 'success' }) === sendsBefore + 1 ? families : undefined;
    });
    expect(sampleValue(after, 'user_sms_websms_request_duration_seconds_count', { result: 'accepted' })).toBe(callsBefore + 1);
    expect(sampleValue(after, 'user_sms_websms_request_duration_seconds_bucket', { result: 'accepted', le: '+Inf' })).toBe(callsBefore + 1);
    expect(sampleValue(after, 'user_sms_websms_request_duration_seconds_sum', { result: 'accepted' })).toBeGreaterThan(0);
    expect(sampleValue(after, 'user_sms_queue_jobs', { state: 'completed' })).toBeGreaterThanOrEqual(1);
    // The heartbeat carries the processed count every few seconds.
    await eventually(async () => {
      const { families } = await scrape();
      const processed = families.get('user_sms_worker_jobs_processed_total')!.samples.reduce((sum, s) => sum + s.value, 0);
      return processed >= 1 ? true : undefined;
    }, 15_000);
  });

  it('counts limiter waits when an enterprise sends faster than its limit', async () => {
    const waitsBefore = sampleValue((await scrape()).families, 'user_sms_limiter_waits_total') ?? 0;
    await Promise.all([0, 1].map((i) => postJson(baseUrl, '/send', { enterprise_number: '0368', phone: PHONE, text: `metrics: limited ${i}` })));
    const families = await eventually(async () => {
      const { families: f } = await scrape();
      return (sampleValue(f, 'user_sms_limiter_waits_total') ?? 0) > waitsBefore ? f : undefined;
    });
    expect(sampleValue(families, 'user_sms_limiter_wait_seconds_total')).toBeGreaterThan(0);
  });

  it('never carries a phone, a text or a key', async () => {
    const { text } = await scrape();
    expect(text).not.toContain(PHONE.slice(1));
    expect(text).not.toContain('metrics: counted');
    expect(text).not.toContain(DEMO_KEY);
    expect(text).not.toContain(DEMO_USER);
  });
});

describe('/health worker and backlog fields', () => {
  let env: TestEnv;
  let baseUrl: string;
  let worker: Running;

  beforeAll(async () => {
    env = await createTestEnv({ SEND_WAIT_MS: '100' });
    await env.seedEnterprise({ number: '0367', name: 'june', customDomain: CREDENTIALS });
    const service = await env.startService({ workers: 1 });
    baseUrl = service.api!.url;
    worker = service.workers[0]!;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  const health = async () => {
    const response = await fetch(`${baseUrl}/health`);
    return { status: response.status, json: (await response.json()) as Record<string, unknown> };
  };

  it('is healthy with a live worker, keeps every earlier field, and reports no backlog', async () => {
    const { status, json } = await eventually(async () => {
      const answer = await health();
      return answer.status === 200 ? answer : undefined;
    });
    expect(status).toBe(200);
    expect(json).toMatchObject({ status: 'healthy', database: 'ok', redis: 'ok', workers: 1, workers_alive: true, oldest_waiting_age_s: 0, port: env.config.port });
    expect(typeof json.timestamp).toBe('string');
    expect(json.queue).toBeTypeOf('object');
  });

  it('answers 503 as soon as the last worker stops, and reports how long the oldest message has waited', async () => {
    await worker.stop();
    const down = await health();
    expect(down.status).toBe(503);
    expect(down.json).toMatchObject({ status: 'unhealthy', workers_alive: false, workers: 0 });

    const { status, json } = await postJson(baseUrl, '/send', { enterprise_number: '0367', phone: PHONE, text: 'waits for a worker' });
    expect(status).toBe(202);
    // The oldest waiting message's age grows while no worker runs: wait until it reaches a second.
    const waiting = await eventually(async () => {
      const answer = await health();
      return (answer.json.oldest_waiting_age_s as number) >= 1 ? answer : undefined;
    });
    expect(waiting.status).toBe(503);
    expect(waiting.json.oldest_waiting_age_s).toBeGreaterThanOrEqual(1);

    // A worker comes back: the message goes out and the service is healthy again.
    await env.startWorker();
    const back = await eventually(async () => {
      const answer = await health();
      return answer.status === 200 && answer.json.oldest_waiting_age_s === 0 ? answer : undefined;
    }, 20_000);
    expect(back.json.workers_alive).toBe(true);
    await eventually(async () => {
      const row = await env.db.selectFrom('user_sms_send').select('status').where('id', '=', String(json.id)).executeTakeFirstOrThrow();
      return row.status === 'success' ? true : undefined;
    });
  });
});

describe('worker heartbeats and counters in Redis', () => {
  let redis: RedisClient;
  const prefix = `{m${randomBytes(4).toString('hex')}}`;

  beforeAll(() => {
    redis = connectTestRedis(inject('redisUrl'));
  });
  afterAll(async () => {
    const keys = metricsKeys(prefix);
    await redis.del(keys.sends, keys.websms, keys.limiter, keys.workers);
    redis.disconnect();
  });

  it('drops a worker that stopped beating without saying so (killed) once its TTL has passed', async () => {
    // One beat, never renewed. The TTL leaves a busy machine time to see the worker alive first.
    const heartbeat = startWorkerHeartbeat(redis, prefix, () => ({ processed: 3, droppedMetricWrites: 0 }), { intervalMs: 60_000, ttlMs: 2_000 });
    const alive = await eventually(async () => {
      const workers = await readLiveWorkers(redis, prefix);
      return workers.length === 1 ? workers : undefined;
    });
    expect(alive[0]).toMatchObject({ pid: process.pid, processed: 3 });
    await eventually(async () => ((await readLiveWorkers(redis, prefix)).length === 0 ? true : undefined));
    expect(await readLiveWorkers(redis, prefix)).toEqual([]);
    expect(await redis.smembers(metricsKeys(prefix).workers)).toEqual([]);
    await heartbeat.stop();
  });

  it('folds enterprises beyond the series budget into one "other" label', async () => {
    const recorder = createMetricsRecorder(redis, prefix, { maxSendSeries: 3 });
    for (const enterprise of ['1', '2', '3', '4', '5']) recorder.sendOutcome(enterprise, 'success');
    recorder.sendOutcome('1', 'success');
    const counters = await eventually(async () => {
      const snapshot = await readCounters(redis, prefix);
      return snapshot.sends.reduce((sum, s) => sum + s.count, 0) === 6 ? snapshot : undefined;
    });
    expect(Object.fromEntries(counters.sends.map((s) => [s.enterprise, s.count]))).toEqual({ '1': 2, '2': 1, '3': 1, [OTHER_ENTERPRISE]: 2 });
  });

  it('counts in memory and writes the counts folded, not one write per send; closing writes what is left', async () => {
    const own = `{m${randomBytes(4).toString('hex')}}`;
    const recorder = createMetricsRecorder(redis, own, { flushMs: 60_000 });
    for (let i = 0; i < 50; i += 1) {
      recorder.sendOutcome('0367', 'success');
      recorder.websmsCall(12, 'accepted');
    }
    recorder.limiterWait(500);
    recorder.deliveryFinal('0367', 'delivered', 90_000);
    // Nothing written yet: the counts wait for the next flush.
    expect(await redis.exists(metricsKeys(own).sends, metricsKeys(own).websms, metricsKeys(own).limiter)).toBe(0);
    await recorder.close();
    const counters = await readCounters(redis, own);
    expect(counters.sends).toEqual([{ outcome: 'success', enterprise: '0367', count: 50 }]);
    expect(counters.websms).toMatchObject([{ result: 'accepted', count: 50, sumMs: 600 }]);
    expect(counters.websms[0]!.buckets.find((b) => b.leMs === 25)!.count).toBe(50);
    expect(counters.limiter).toEqual({ waits: 1, waitMs: 500 });
    expect(counters.delivery).toEqual([{ status: 'delivered', enterprise: '0367', count: 1 }]);
    expect(counters.deliveryTime).toMatchObject({ count: 1, sumS: 90 });
    expect(recorder.droppedWrites()).toBe(0);
    const keys = metricsKeys(own);
    await redis.del(keys.sends, keys.websms, keys.limiter, keys.delivery, keys.deliveryTime);
  });

  it('never throws or waits when Redis is unreachable, and counts the dropped writes', async () => {
    const nowhere = createRedis({ kind: 'single', url: `redis://127.0.0.1:${await freePort()}` }, 'command');
    nowhere.on('error', () => undefined);
    const recorder = createMetricsRecorder(nowhere, prefix);
    const started = performance.now();
    for (let i = 0; i < 100; i += 1) {
      recorder.sendOutcome('0367', 'success');
      recorder.websmsCall(12, 'accepted');
      recorder.limiterWait(500);
    }
    expect(performance.now() - started).toBeLessThan(1_000);
    await eventually(() => Promise.resolve(recorder.droppedWrites() === 300 ? true : undefined));
    nowhere.disconnect();
  });
});
