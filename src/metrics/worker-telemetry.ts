import { createRedis, type RedisTarget } from '../redis-connection.ts';
import type { Logger } from '../logger.ts';
import { createMetricsRecorder, type MetricsRecorder } from './metrics-store.ts';
import { startWorkerHeartbeat, type RunningHeartbeat } from './worker-heartbeat.ts';

// What a worker process reports about itself: delivery counters and its heartbeat. It has its own
// Redis connection, of the fail-fast kind (no offline queue, command timeout): while Redis is away a
// counter write fails at once and is dropped instead of piling up in memory, and counter writes
// never queue up in front of the limiter's and the jobs' commands.

/** The worker's job events that count as a processed run (a delayed job, rate-limited, is neither). */
interface JobEvents {
  on(event: 'completed' | 'failed', listener: () => void): unknown;
}

export interface WorkerTelemetry {
  metrics: MetricsRecorder;
  /** Starts the heartbeat and counts the worker's finished jobs. */
  start(worker: JobEvents): void;
  stop(): Promise<void>;
}

/** Dropped metric writes are logged at most this often: Redis errors are logged elsewhere already. */
const DROPPED_LOG_INTERVAL_MS = 60_000;

export function createWorkerTelemetry(target: RedisTarget, prefix: string, logger: Logger): WorkerTelemetry {
  const redis = createRedis(target, 'command', 'user-sms-metrics');
  redis.on('error', () => undefined); // counted as dropped writes
  const recorder = createMetricsRecorder(redis, prefix);
  let processed = 0;
  let failedBeats = 0;
  let stopped = false;
  let heartbeat: RunningHeartbeat | undefined;
  const dropped = () => recorder.droppedWrites() + failedBeats;
  let lastLoggedDrops = 0;
  let lastLoggedAt = 0;

  const reportDrops = () => {
    const count = dropped();
    if (count > lastLoggedDrops && Date.now() - lastLoggedAt >= DROPPED_LOG_INTERVAL_MS) {
      logger.warn({ dropped: count }, 'metric writes dropped (Redis unavailable); sending is not affected');
      lastLoggedDrops = count;
      lastLoggedAt = Date.now();
    }
  };

  return {
    metrics: recorder,
    start(worker) {
      worker.on('completed', () => {
        processed += 1;
      });
      worker.on('failed', () => {
        processed += 1;
      });
      const begin = () => {
        if (stopped) return;
        heartbeat ??= startWorkerHeartbeat(
          redis,
          prefix,
          () => {
            reportDrops();
            return { processed, droppedMetricWrites: dropped() };
          },
          {
            onError: () => {
              failedBeats += 1;
            },
          },
        );
      };
      // Without an offline queue, a write before the connection is up would only be dropped.
      if (redis.status === 'ready') begin();
      else redis.once('ready', begin);
    },
    async stop() {
      stopped = true;
      await recorder.close();
      await heartbeat?.stop();
      redis.disconnect();
    },
  };
}
