import { Cluster } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, DEMO_KEY, DEMO_USER, postJson, type TestEnv } from '../support/context.ts';
import { scanKeys } from '../support/test-redis.ts';

// Every key the service writes starts with the queue prefix, whose {hash tag} puts them all in one
// Cluster slot: BullMQ's scripts, the line's script, MULTI and MGET each touch several keys, and a
// Cluster refuses commands whose keys span slots (CROSSSLOT). Run by both the integration and the
// cluster projects; in the cluster project the slots are Redis's own answer (CLUSTER KEYSLOT).

describe('Redis keys', () => {
  let env: TestEnv;
  let baseUrl: string;

  beforeAll(async () => {
    env = await createTestEnv({ REQUEST_RATE_LIMIT_PER_WINDOW: '100', CALLBACK_ALLOWED_HOSTS: '127.0.0.1', CALLBACK_SIGNING_SECRET: `whsec_${Buffer.alloc(32, 7).toString('base64')}` });
    await env.seedEnterprise({ number: '0367', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    const { api } = await env.startService({ workers: 1 });
    baseUrl = api!.url;
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it('connects the way the settings say: a Cluster client in the cluster project, one server otherwise', () => {
    const cluster = Boolean(process.env.REDIS_CLUSTER_NODES);
    expect(env.config.redis.kind).toBe(cluster ? 'cluster' : 'single');
    expect(env.redis instanceof Cluster).toBe(cluster);
  });

  it('puts every key of a send, its line, its limit, the counters and the throttles in one slot', async () => {
    for (let i = 0; i < 4; i += 1) {
      const answer = await postJson(baseUrl, '/send', { enterprise_number: '0367', phone: `+37529100000${i}`, text: `slot ${i}` });
      expect([200, 202]).toContain(answer.status);
    }
    // A failed credential and a metrics scrape write their own keys too.
    await fetch(`${baseUrl}/reports/summary`, { headers: { authorization: 'Basic eDp5' } }).then((r) => r.arrayBuffer());
    await fetch(`${baseUrl}/metrics`).then((r) => r.arrayBuffer());

    const keys = await scanKeys(env.redis, `${env.config.queuePrefix}*`);
    const kinds = new Set(keys.map((key) => key.slice(env.config.queuePrefix.length + 1).split(':')[0]));
    expect([...kinds]).toEqual(expect.arrayContaining(['user-sms-send', 'metrics', 'rate', 'http-rate']));
    for (const key of keys) expect(key.startsWith(env.config.queuePrefix), key).toBe(true);
    if (env.redis instanceof Cluster) {
      const slots = new Set(await Promise.all(keys.map((key) => (env.redis as Cluster).cluster('KEYSLOT', key))));
      expect([...slots]).toHaveLength(1);
    }
  });
});
