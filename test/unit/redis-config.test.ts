import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.ts';
import { describeRedisTarget, hasHashTag, parseHostPorts } from '../../src/redis-connection.ts';

describe('Redis set-up from the environment', () => {
  it('is one server named by REDIS_URL unless sentinels or cluster nodes are given', () => {
    const config = loadConfig({ REDIS_URL: 'redis://:pw@10.0.0.5:6380/2' });
    expect(config.redis).toEqual({ kind: 'single', url: 'redis://:pw@10.0.0.5:6380/2' });
    expect(config.grantReplication).toEqual({ replicas: 0, waitMs: 500 });
  });

  it('follows a Sentinel-watched master; REDIS_URL still carries password and database; grants wait for one replica', () => {
    const config = loadConfig({
      REDIS_URL: 'redis://:secret@ignored:1/3',
      REDIS_SENTINELS: ' 10.0.0.1:26379, sentinel-b:26380,[::1]:26381',
      REDIS_SENTINEL_MASTER: 'sms-master',
    });
    expect(config.redis).toEqual({
      kind: 'sentinel',
      url: 'redis://:secret@ignored:1/3',
      sentinels: [
        { host: '10.0.0.1', port: 26379 },
        { host: 'sentinel-b', port: 26380 },
        { host: '::1', port: 26381 },
      ],
      masterName: 'sms-master',
      sentinelPassword: undefined,
    });
    expect(config.grantReplication.replicas).toBe(1);
    expect(loadConfig({ REDIS_SENTINELS: 'a:1', REDIS_SENTINEL_MASTER: 'm', REDIS_GRANT_REPLICAS: '0' }).grantReplication.replicas).toBe(0);
    const described = describeRedisTarget(config.redis);
    expect(described).toContain('sms-master');
    expect(described).not.toContain('secret');
  });

  it('connects to a Cluster through its seed nodes', () => {
    const config = loadConfig({ REDIS_CLUSTER_NODES: '127.0.0.1:7000,127.0.0.1:7001', QUEUE_PREFIX: '{sms}' });
    expect(config.redis).toMatchObject({ kind: 'cluster', nodes: [{ host: '127.0.0.1', port: 7000 }, { host: '127.0.0.1', port: 7001 }] });
    expect(config.grantReplication.replicas).toBe(0);
  });

  it.each([
    [{ REDIS_SENTINELS: '10.0.0.1' }, 'REDIS_SENTINELS'],
    [{ REDIS_SENTINELS: '10.0.0.1:99999', REDIS_SENTINEL_MASTER: 'm' }, 'REDIS_SENTINELS'],
    [{ REDIS_SENTINELS: ',', REDIS_SENTINEL_MASTER: 'm' }, 'REDIS_SENTINELS'],
    [{ REDIS_SENTINELS: '10.0.0.1:26379' }, 'REDIS_SENTINEL_MASTER'],
    [{ REDIS_SENTINEL_MASTER: 'm' }, 'REDIS_SENTINEL_MASTER'],
    [{ REDIS_SENTINELS: 'a:1', REDIS_SENTINEL_MASTER: 'bad name' }, 'REDIS_SENTINEL_MASTER'],
    [{ REDIS_SENTINELS: 'a:1', REDIS_SENTINEL_MASTER: 'm', REDIS_CLUSTER_NODES: 'b:2' }, 'REDIS_CLUSTER_NODES'],
    [{ REDIS_CLUSTER_NODES: 'b:x' }, 'REDIS_CLUSTER_NODES'],
    [{ REDIS_CLUSTER_NODES: 'b:2', QUEUE_PREFIX: 'sms' }, 'QUEUE_PREFIX'],
    [{ REDIS_CLUSTER_NODES: 'b:2', QUEUE_PREFIX: '{}sms' }, 'QUEUE_PREFIX'],
    [{ REDIS_CLUSTER_NODES: 'b:2', REDIS_URL: 'redis://h:1/4' }, 'REDIS_URL'],
    [{ REDIS_GRANT_REPLICAS: '-1' }, 'REDIS_GRANT_REPLICAS'],
    [{ REDIS_GRANT_WAIT_MS: '0' }, 'REDIS_GRANT_WAIT_MS'],
  ])('refuses to start with %o, naming %s', (env, name) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(name);
  });

  it('knows a hash-tagged prefix: the first {…} with something in it', () => {
    expect(hasHashTag('{sms}')).toBe(true);
    expect(hasHashTag('app-{sms}')).toBe(true);
    expect(hasHashTag('sms')).toBe(false);
    expect(hasHashTag('{}sms{x}')).toBe(false);
    expect(hasHashTag('sms}{')).toBe(false);
  });

  it('reads host:port lists, IPv6 in brackets', () => {
    expect(parseHostPorts('a:1,[fe80::1]:2')).toEqual([
      { host: 'a', port: 1 },
      { host: 'fe80::1', port: 2 },
    ]);
    expect(() => parseHostPorts('a:0')).toThrow('a:0');
  });
});
