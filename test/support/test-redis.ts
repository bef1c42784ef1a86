import { once } from 'node:events';
import { Cluster } from 'ioredis';
import { createRedis, parseHostPorts, type RedisClient, type RedisTarget } from '../../src/redis-connection.ts';

// The Redis the tests run against: the server REDIS_URL names, or, in the `cluster` project (see
// global-setup-cluster.ts), the local Cluster that REDIS_CLUSTER_NODES names; REDIS_URL then gives
// only credentials. Child processes inherit both variables, so the service under test connects the
// same way.

const DEFAULT_REDIS_URL = 'redis://127.0.0.1:6379';

export function testRedisTarget(url: string = process.env.REDIS_URL ?? DEFAULT_REDIS_URL): RedisTarget {
  const nodes = process.env.REDIS_CLUSTER_NODES;
  return nodes ? { kind: 'cluster', url, nodes: parseHostPorts(nodes) } : { kind: 'single', url };
}

/** Environment for a service process or config: REDIS_URL, and REDIS_CLUSTER_NODES in the cluster project. */
export function testRedisEnv(url: string = process.env.REDIS_URL ?? DEFAULT_REDIS_URL): Record<string, string> {
  return { REDIS_URL: url, ...(process.env.REDIS_CLUSTER_NODES ? { REDIS_CLUSTER_NODES: process.env.REDIS_CLUSTER_NODES } : {}) };
}

/** A connection for a test's own reads and writes (patient: retries while Redis is away). */
export function connectTestRedis(url?: string): RedisClient {
  return createRedis(testRedisTarget(url), 'blocking', 'user-sms-test');
}

/** Keys matching `pattern`, on every master of a Cluster (SCAN sees one node only). */
export async function scanKeys(redis: RedisClient, pattern: string): Promise<string[]> {
  // A Cluster client knows its nodes only once it has read the slot map.
  if (redis instanceof Cluster && redis.status !== 'ready') await once(redis, 'ready', { signal: AbortSignal.timeout(10_000) });
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  const keys: string[] = [];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, batch] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', 1000);
      cursor = next;
      keys.push(...batch);
    } while (cursor !== '0');
  }
  return keys;
}

/** Deletes keys matching `pattern`; one DEL per key, as keys of different slots cannot share one in a Cluster. */
export async function deleteKeys(redis: RedisClient, pattern: string): Promise<void> {
  for (const key of await scanKeys(redis, pattern)) await redis.del(key);
}
