import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRedis, parseHostPorts, waitForRedis, type RedisClient, type RedisTarget, type RedisUse } from '../../src/redis-connection.ts';
import { command, SENTINEL_MASTER, startSentinelSet, type SentinelSet, type SentinelSetOptions } from '../support/redis-topology.ts';
import { waitFor } from './harness.ts';

// The connection factory under Sentinel, without the service around it: connections of both kinds,
// busy, through crashes of whichever server is the master. Each must end up on the new master by
// itself. A connection that ioredis gives up on (status "end": it never reconnects) would leave a
// worker idle or an API answering 503 until restarted, which is what a race between a connection's
// own reconnect and a +switch-master notice used to cause now and then: one crash in four left some
// connections ended. Three crashes with 16 connections make such a race likely to show.

/** After the promotion, a connection reconnects within its backoff (≤ 1 s); the rest is a busy machine. */
const RECOVERY_MS = 15_000;

interface Connection {
  use: RedisUse;
  redis: RedisClient;
  ended: number;
}

/** Where the set's env points the service; `withSentinelPassword` false leaves REDIS_SENTINEL_PASSWORD out. */
function targetOf(set: SentinelSet, withSentinelPassword = true): RedisTarget {
  const sentinelPassword = withSentinelPassword ? set.env.REDIS_SENTINEL_PASSWORD : undefined;
  return { kind: 'sentinel', url: set.env.REDIS_URL!, sentinels: parseHostPorts(set.env.REDIS_SENTINELS!), masterName: SENTINEL_MASTER, sentinelPassword };
}

/** Sentinel set-up and connections for one describe; `connections()` once beforeAll has run. */
function sentinelConnections(count: number, options: SentinelSetOptions = {}) {
  let set: SentinelSet | undefined;
  const connections: Connection[] = [];
  beforeAll(async () => {
    set = await startSentinelSet(options);
    for (let i = 0; i < count; i += 1) {
      const use: RedisUse = i % 2 === 0 ? 'command' : 'blocking';
      const redis = createRedis(targetOf(set), use, `crash-test-${i}`);
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
  return { set: () => set!, connections };
}

/**
 * Kills the master with -9 while every connection writes; resolves once all of them write to the new
 * one and, with `restart`, once the killed server is back as a replica the sentinels would promote.
 */
async function crashTheMaster(set: SentinelSet, connections: Connection[], crash: number, restart: boolean): Promise<void> {
  let stop = false;
  const busy = connections.map(async ({ redis }, i) => {
    while (!stop) {
      await redis.incr(`crash-test:${i}`).catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  });
  try {
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
      const stuck = connections.filter((c) => c.redis.status !== 'ready').map((c) => `${c.use} ${c.redis.status} (ended ${c.ended}×)`);
      throw new Error(`${String(error)}; not ready: ${stuck.join(', ')}`);
    });
    expect((await command(survivor.port, ['GET', 'crash-test:probe']))[0]).toBe(String(crash));
    if (!restart) return;
    // The crashed server comes back empty; the sentinels make it a replica of the new master, ready
    // to be promoted at the next crash.
    await dying!.start();
    // The sentinels turn it into a replica when they next ask it (INFO every 10 s), and see its link
    // up at the ask after that: up to about 40 s on a busy machine.
    await waitFor(`crash ${crash}: the old master to replicate the new one, and the sentinels to know it`, 90_000, async () => {
      const replication = (await command(dying!.port, ['INFO', 'replication'])).join('\n');
      return (replication.includes('master_link_status:up') && (await set.promotable(dying!.port))) || undefined;
    }).catch(async (error: unknown) => {
      throw new Error(`${String(error)}; ${await set.describeReplica(dying!.port)}`);
    });
  } finally {
    stop = true;
    await Promise.all(busy);
  }
}

describe('Sentinel: every connection follows the master through repeated crashes', () => {
  const crashes = 3;
  const { set, connections } = sentinelConnections(16);

  it(`16 busy connections (API and worker kinds) all write to the new master after each of ${crashes} kill -9s`, async () => {
    for (let crash = 1; crash <= crashes; crash += 1) await crashTheMaster(set(), connections, crash, crash < crashes);
    for (const c of connections) expect(c.ended, `a ${c.use} connection ended`).toBe(0);
  }, 420_000);
});

describe('Sentinel with passwords: REDIS_URL for the servers, REDIS_SENTINEL_PASSWORD for the sentinels', () => {
  const password = 'server-secret-7f3a';
  const sentinelPassword = 'sentinel-secret-c41d';
  const { set, connections } = sentinelConnections(4, { password, sentinelPassword });

  it('connects through sentinels that require a password, and follows a crash of the master', async () => {
    await crashTheMaster(set(), connections, 1, false);
    for (const c of connections) expect(c.ended, `a ${c.use} connection ended`).toBe(0);
  });

  it('without the sentinels\' password it does not connect, and says where it looked without a password in it', async () => {
    const target = targetOf(set(), false);
    const redis = createRedis(target, 'command', 'no-sentinel-password');
    const errors: string[] = [];
    redis.on('error', (error: Error) => errors.push(error.message));
    const failure = await waitForRedis(redis, target, 3_000).then(
      () => undefined,
      (error: Error) => error.message,
    );
    expect(failure).toMatch(/Redis is not reachable: master "sms-test" through sentinels 127\.0\.0\.1:\d+/);
    expect(errors.join('\n')).toMatch(/NOAUTH|WRONGPASS|Authentication/i);
    for (const text of [failure!, ...errors]) {
      expect(text).not.toContain(password);
      expect(text).not.toContain(sentinelPassword);
    }
  });
});
