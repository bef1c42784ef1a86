import { once } from 'node:events';
import { Cluster, Redis, type ClusterOptions, type RedisOptions } from 'ioredis';

// Every Redis connection of every process is made here, from one description of where Redis is:
// - single: REDIS_URL names the server;
// - sentinel: REDIS_SENTINELS and REDIS_SENTINEL_MASTER; the sentinels say which server is the master,
//   and a connection asks them again whenever it reconnects, so it follows a failover by itself;
// - cluster: REDIS_CLUSTER_NODES seed a Cluster client, which learns the slots and follows MOVED.
// In the last two REDIS_URL still gives the user, password, database and TLS (rediss:); its host and
// port are not used.
//
// Two kinds of connection, on purpose:
// - command (API requests, counters): no offline queue and a command timeout, so an outage or a
//   failover in progress is a fast error (503), never a request hanging on a reconnect;
// - blocking (workers, event streams, anything BullMQ blocks on): unlimited retries per command, as
//   BullMQ requires, so they simply carry on once the new master answers.

export type RedisClient = Redis | Cluster;
export type RedisUse = 'command' | 'blocking';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export type RedisTarget =
  | { readonly kind: 'single'; readonly url: string }
  | { readonly kind: 'sentinel'; readonly url: string; readonly sentinels: readonly HostPort[]; readonly masterName: string; readonly sentinelPassword: string | undefined }
  | { readonly kind: 'cluster'; readonly url: string; readonly nodes: readonly HostPort[] };

/** `host:port,host:port` (IPv6 as `[::1]:26379`) → addresses; throws naming what is wrong. */
export function parseHostPorts(list: string): HostPort[] {
  const entries = list
    .split(',')
    .map((entry) => entry.trim())
    .filter(Boolean);
  if (entries.length === 0) throw new Error('must list at least one host:port');
  return entries.map((entry) => {
    const match = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(entry);
    const port = match ? Number(match[3]) : NaN;
    if (!match || port < 1 || port > 65535) throw new Error(`"${entry}" is not host:port`);
    return { host: match[1] ?? match[2]!, port };
  });
}

/** A queue prefix whose keys all hash to one Cluster slot: it must start a `{tag}` with something in it. */
export function hasHashTag(prefix: string): boolean {
  const open = prefix.indexOf('{');
  if (open === -1) return false;
  const close = prefix.indexOf('}', open + 1);
  return close > open + 1;
}

/** What REDIS_URL contributes besides host and port. */
function credentials(url: string): { username?: string; password?: string; db: number; tls?: object } {
  const parsed = new URL(url);
  const db = Number(parsed.pathname.replace(/^\//, '') || '0');
  return {
    ...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
    db: Number.isInteger(db) ? db : 0,
    ...(parsed.protocol === 'rediss:' ? { tls: {} } : {}),
  };
}

function useOptions(use: RedisUse): RedisOptions {
  return use === 'command'
    ? { enableOfflineQueue: false, maxRetriesPerRequest: 1, commandTimeout: 3_000, connectTimeout: 3_000 }
    : { maxRetriesPerRequest: null, enableReadyCheck: true, connectTimeout: 3_000 };
}

/**
 * After a role change a connection may still reach the old master, now a replica (a failover
 * without a crash: SENTINEL FAILOVER, a network partition healed): its writes fail with READONLY.
 * Reconnecting asks the sentinels again and resends the command to the new master.
 */
function reconnectOnReadonly(error: Error): 2 | false {
  return error.message.startsWith('READONLY') ? 2 : false;
}

/** Reconnect backoff: quick at first (a failover takes seconds), never more than 1 s apart. */
const retryDelayMs = (attempt: number) => Math.min(attempt * 100, 1_000);

/** One connection to the target, of the given kind; `name` shows in CLIENT LIST. */
export function createRedis(target: RedisTarget, use: RedisUse, name?: string): RedisClient {
  const base: RedisOptions = { ...useOptions(use), ...(name ? { connectionName: name } : {}) };
  switch (target.kind) {
    case 'single':
      return new Redis(target.url, { ...base, retryStrategy: retryDelayMs, reconnectOnError: reconnectOnReadonly });
    case 'sentinel':
      return new Redis({
        ...base,
        ...credentials(target.url),
        sentinels: target.sentinels.map(({ host, port }) => ({ host, port })),
        name: target.masterName,
        ...(target.sentinelPassword ? { sentinelPassword: target.sentinelPassword } : {}),
        // Sentinels unreachable: keep asking (never give up: a null here would end the connection).
        sentinelRetryStrategy: retryDelayMs,
        retryStrategy: retryDelayMs,
        // No failoverDetector (ioredis's subscription to the sentinels' +switch-master): a notice that
        // arrives while a connection is already re-resolving the master (as after a kill -9, when the
        // socket closed first) aborts that attempt, and ioredis then ends the connection for good,
        // status "end", never to reconnect. Sentinel itself closes every client of a master it demotes
        // and of the replica it promotes (CLIENT KILL during the failover), so connections notice a role
        // change by being closed; READONLY (below) covers a write that races with it.
        reconnectOnError: reconnectOnReadonly,
      });
    case 'cluster': {
      const { db: _db, ...auth } = credentials(target.url);
      // A node's connection is opened on its first command, which must wait for it (within the command
      // timeout) rather than fail on a connection still being made: ioredis gives nodes an offline
      // queue, which ours must not override. The Cluster's own (below) keeps the fail-fast rule while
      // the Cluster as a whole is unreachable.
      const { enableOfflineQueue: _nodeQueue, ...nodeOptions } = base;
      const options: ClusterOptions = {
        redisOptions: { ...nodeOptions, ...auth, reconnectOnError: reconnectOnReadonly },
        enableOfflineQueue: use === 'blocking',
        enableReadyCheck: true,
        clusterRetryStrategy: retryDelayMs,
        // Refresh the slot map at once when a node is lost (a replica promoted), not only on MOVED.
        retryDelayOnFailover: 200,
        retryDelayOnClusterDown: 300,
      };
      return new Cluster(
        target.nodes.map(({ host, port }) => ({ host, port })),
        options,
      );
    }
  }
}

/** Where Redis is, for messages: no password, the variable to look at. */
export function describeRedisTarget(target: RedisTarget): string {
  switch (target.kind) {
    case 'single':
      return `${redactUrl(target.url)} (REDIS_URL)`;
    case 'sentinel':
      return `master "${target.masterName}" through sentinels ${target.sentinels.map(hostPort).join(',')} (REDIS_SENTINELS, REDIS_SENTINEL_MASTER)`;
    case 'cluster':
      return `cluster ${target.nodes.map(hostPort).join(',')} (REDIS_CLUSTER_NODES)`;
  }
}

/** Resolves once the connection is ready; otherwise closes it and throws, naming the target. */
export async function waitForRedis(redis: RedisClient, target: RedisTarget, timeoutMs = 10_000): Promise<void> {
  if (redis.status === 'ready') return;
  try {
    await once(redis, 'ready', { signal: AbortSignal.timeout(timeoutMs) });
  } catch {
    redis.disconnect();
    throw new Error(`Redis is not reachable: ${describeRedisTarget(target)}`);
  }
}

/** Connection URLs may carry passwords: never print them. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '(invalid URL)';
  }
}

function hostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
