import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedis, parseHostPorts, type RedisClient, type RedisTarget, type RedisUse } from '../../src/redis-connection.ts';
import { command, SENTINEL_MASTER, startSentinelSet, type SentinelSet } from '../support/redis-topology.ts';
import { waitFor } from './harness.ts';

// The connection factory under Sentinel, without the service around it: many connections of both
// kinds, busy, through several crashes of whichever server is the master. Each must end up on the
// new master by itself. A connection that ioredis gives up on (status "end": it never reconnects)
// would leave a worker idle or an API answering 503 until restarted, which is what a race between
// a connection's own reconnect and a +switch-master notice used to cause now and then: one crash in
// four left some connections ended. Three crashes with 16 connections make such a race likely to show.

const CONNECTIONS = 16;
const CRASHES = 3;
/** After the promotion, a connection reconnects within its backoff (≤ 1 s); the rest is a busy machine. */
const RECOVERY_MS = 15_000;

describe('Sentinel: every connection follows the master through repeated crashes', () => {
  let set: SentinelSet;
  const connections: Array<{ use: RedisUse; redis: RedisClient; ended: number }> = [];

  beforeAll(async () => {
    set = await startSentinelSet();
    const target: RedisTarget = {
      kind: 'sentinel',
      url: set.env.REDIS_URL!,
      sentinels: parseHostPorts(set.env.REDIS_SENTINELS!),
      masterName: SENTINEL_MASTER,
      sentinelPassword: undefined,
    };
    for (let i = 0; i < CONNECTIONS; i += 1) {
      const use: RedisUse = i % 2 === 0 ? 'command' : 'blocking';
      const redis = createRedis(target, use, `crash-test-${i}`);
      const entry = { use, redis, ended: 0 };
      // Errors during a failover are expected (refused connects, closed sockets); what matters is the end state.
      redis.on('error', () => undefined);
      redis.on('end', () => (entry.ended += 1));
      connections.push(entry);
    }
    await waitFor('every connection to be ready', 15_000, () => connections.every((c) => c.redis.status === 'ready') || undefined);
  });

  afterAll(async () => {
    for (const { redis } of connections) redis.disconnect();
    await set?.close();
    expect(set?.pids() ?? [], 'redis processes still running').toEqual([]);
  });

  it(`${CONNECTIONS} busy connections (API and worker kinds) all write to the new master after each of ${CRASHES} kill -9s`, async () => {
    let stop = false;
    // Every connection keeps writing, so a crash finds commands in flight on each.
    const busy = connections.map(async ({ redis }, i) => {
      while (!stop) {
        await redis.incr(`crash-test:${i}`).catch(() => undefined);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    });
    try {
      for (let crash = 1; crash <= CRASHES; crash += 1) {
        const masterPort = await set.masterPort();
        const dying = set.servers.find((s) => s.port === masterPort);
        expect(dying, `the master (port ${masterPort}) is one of the set's servers`).toBeDefined();
        const survivor = set.servers.find((s) => s !== dying)!;
        await dying!.kill();
        await waitFor(`crash ${crash}: the sentinels to promote port ${survivor.port}`, 30_000, async () => ((await set.masterPort()) === survivor.port ? true : undefined));
        await waitFor(`crash ${crash}: every connection to write to the new master`, RECOVERY_MS, async () => {
          const written = await Promise.all(connections.map(({ redis }) => redis.set('crash-test:probe', String(crash)).then(() => true, () => false)));
          return written.every(Boolean) || undefined;
        }).catch((error: unknown) => {
          const stuck = connections.map((c, i) => `#${i} ${c.use} ${c.redis.status} (ended ${c.ended}×)`).filter((_, i) => connections[i]!.redis.status !== 'ready');
          throw new Error(`${String(error)}; not ready: ${stuck.join(', ')}`);
        });
        expect((await command(survivor.port, ['GET', 'crash-test:probe']))[0]).toBe(String(crash));
        // The crashed server comes back empty; the sentinels make it a replica of the new master, ready
        // to be promoted at the next crash.
        await dying!.start();
        await waitFor(`crash ${crash}: the old master to replicate the new one`, 30_000, async () => {
          const replication = (await command(dying!.port, ['INFO', 'replication'])).join('\n');
          const known = await command(set.sentinels[0]!.port, ['SENTINEL', 'REPLICAS', SENTINEL_MASTER]);
          return (replication.includes('master_link_status:up') && known.includes(String(dying!.port)) && !known.some((v) => v.includes('s_down'))) || undefined;
        });
      }
    } finally {
      stop = true;
      await Promise.all(busy);
    }
    for (const c of connections) expect(c.ended, `a ${c.use} connection ended`).toBe(0);
  });
});
