import { hostname } from 'node:os';
import type { RedisClient } from '../redis-connection.ts';
import { metricsKeys } from './metrics-store.ts';

// Worker liveness across processes and machines. Each worker process keeps a key with a TTL
// (`${prefix}:metrics:worker:<id>`) and its id in a set, so the API can list live workers without
// SCAN (which Redis Cluster would only run on one node). A worker that stops cleanly removes its
// key; one that dies stops refreshing it and drops out when the TTL runs out.

/** How often a worker refreshes its key. */
export const HEARTBEAT_INTERVAL_MS = 5_000;
/** Three missed beats before a worker counts as gone: one slow beat is not a dead worker. */
export const HEARTBEAT_TTL_MS = 15_000;

export interface WorkerHeartbeat {
  /** `${host}:${pid}` */
  id: string;
  host: string;
  pid: number;
  startedAt: string;
  beatAt: string;
  /** Job runs this process finished since it started: completed, or failed (to be retried or for good). */
  processed: number;
  /** Metric writes this process dropped (metrics-store.ts), since it started. */
  droppedMetricWrites: number;
}

export interface HeartbeatStats {
  processed: number;
  droppedMetricWrites: number;
}

export interface RunningHeartbeat {
  /** Stops beating and removes the key, so the worker is gone from /health at once. */
  stop(): Promise<void>;
}

export function startWorkerHeartbeat(
  redis: RedisClient,
  prefix: string,
  stats: () => HeartbeatStats,
  options: { intervalMs?: number; ttlMs?: number; onError?: (error: unknown) => void } = {},
): RunningHeartbeat {
  const keys = metricsKeys(prefix);
  const host = hostname();
  const id = `${host}:${process.pid}`;
  const startedAt = new Date().toISOString();
  const ttlMs = options.ttlMs ?? HEARTBEAT_TTL_MS;

  const beat = async () => {
    const heartbeat: WorkerHeartbeat = { id, host, pid: process.pid, startedAt, beatAt: new Date().toISOString(), ...stats() };
    const results = await redis.multi().set(keys.worker(id), JSON.stringify(heartbeat), 'PX', ttlMs).sadd(keys.workers, id).exec();
    if (!results || results.some(([error]) => error)) throw new Error('heartbeat write failed');
  };
  const beatQuietly = () => {
    beat().catch((error: unknown) => options.onError?.(error));
  };

  beatQuietly();
  const timer = setInterval(beatQuietly, options.intervalMs ?? HEARTBEAT_INTERVAL_MS);
  timer.unref();

  return {
    async stop() {
      clearInterval(timer);
      await redis
        .multi()
        .del(keys.worker(id))
        .srem(keys.workers, id)
        .exec()
        .catch(() => undefined);
    },
  };
}

/** Workers whose heartbeat key is still alive; ids whose key expired are removed from the set. */
export async function readLiveWorkers(redis: RedisClient, prefix: string): Promise<WorkerHeartbeat[]> {
  const keys = metricsKeys(prefix);
  const ids = await redis.smembers(keys.workers);
  if (ids.length === 0) return [];
  const values = await redis.mget(ids.map((id) => keys.worker(id)));
  const live: WorkerHeartbeat[] = [];
  const gone: string[] = [];
  values.forEach((value, index) => {
    const heartbeat = value === null ? undefined : parseHeartbeat(value);
    if (heartbeat) live.push(heartbeat);
    else gone.push(ids[index]!);
  });
  // SREM only removes ids whose key is gone now; a worker that beats again re-adds itself.
  if (gone.length > 0) await redis.srem(keys.workers, ...gone);
  return live.sort((a, b) => a.id.localeCompare(b.id));
}

function parseHeartbeat(value: string): WorkerHeartbeat | undefined {
  try {
    const parsed = JSON.parse(value) as Partial<WorkerHeartbeat>;
    return typeof parsed.id === 'string' && typeof parsed.pid === 'number' ? (parsed as WorkerHeartbeat) : undefined;
  } catch {
    return undefined;
  }
}
