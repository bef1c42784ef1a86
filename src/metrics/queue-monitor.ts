import type { Queue } from 'bullmq';
import type { RedisClient } from '../redis-connection.ts';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { formatFamilies, type MetricFamily } from './exposition.ts';
import { readCounters, type CounterSnapshot } from './metrics-store.ts';
import { readLiveWorkers, type WorkerHeartbeat } from './worker-heartbeat.ts';

// What the API process reads to answer /metrics and /health: the workers' counters and
// heartbeats (Redis), and the queue's own state (BullMQ). All reads, never a write to the queue.

/** Every state a job of this queue can be in (BullMQ 6 keeps paused jobs in `waiting`). */
export const QUEUE_STATES = ['waiting', 'prioritized', 'active', 'delayed', 'waiting-children', 'failed', 'completed'] as const;

export interface QueueMonitor {
  jobCounts: () => Promise<Record<string, number>>;
  /**
   * How long the oldest job that is ready to run has been in the queue (since it was added), 0 when
   * none is waiting. Jobs held back on purpose (`delayed`: rate limit, retry backoff) do not count;
   * a job that was delayed and is now ready counts from when it was first added.
   */
  oldestWaitingAgeMs: () => Promise<number>;
  liveWorkers: () => Promise<WorkerHeartbeat[]>;
  prometheusText: () => Promise<string>;
}

/**
 * More families for the scrape, each read on its own: one that fails is left out and flagged in
 * user_sms_metrics_source_up{source=name}, like the built-in sources.
 */
export interface MetricSource {
  name: string;
  read(): Promise<MetricFamily[]>;
}

export function createQueueMonitor(redis: RedisClient, queue: Queue, prefix: string, now: () => number = Date.now, sources: readonly MetricSource[] = []): QueueMonitor {
  const monitor: QueueMonitor = {
    jobCounts: () => queue.getJobCounts(...QUEUE_STATES),
    async oldestWaitingAgeMs() {
      // Oldest first: at most one job from each list.
      const jobs = await queue.getJobs(['waiting', 'prioritized'], 0, 0, true);
      const oldest = Math.min(...jobs.map((job) => job.timestamp));
      return Number.isFinite(oldest) ? Math.max(0, now() - oldest) : 0;
    },
    liveWorkers: () => readLiveWorkers(redis, prefix),
    async prometheusText() {
      const [[counters, counts, oldestMs, workers], extra] = await Promise.all([
        Promise.allSettled([readCounters(redis, prefix), monitor.jobCounts(), monitor.oldestWaitingAgeMs(), monitor.liveWorkers()]),
        Promise.allSettled(sources.map((source) => source.read())),
      ]);
      const families: MetricFamily[] = [];
      if (counters.status === 'fulfilled') families.push(...counterFamilies(counters.value));
      if (counts.status === 'fulfilled') families.push(queueFamily(counts.value));
      if (oldestMs.status === 'fulfilled') {
        families.push({
          name: 'user_sms_queue_oldest_waiting_age_seconds',
          help: 'How long the oldest job ready to run has been in the queue (0: none waiting).',
          type: 'gauge',
          samples: [{ value: oldestMs.value / 1_000 }],
        });
      }
      if (workers.status === 'fulfilled') families.push(...workerFamilies(workers.value));
      for (const result of extra) if (result.status === 'fulfilled') families.push(...result.value);
      // A source that cannot be read is left out and flagged, rather than failing the whole scrape.
      families.push({
        name: 'user_sms_metrics_source_up',
        help: 'Whether the last scrape could read this source (1) or not (0).',
        type: 'gauge',
        samples: [
          { labels: { source: 'counters' }, value: counters.status === 'fulfilled' ? 1 : 0 },
          { labels: { source: 'queue' }, value: counts.status === 'fulfilled' && oldestMs.status === 'fulfilled' ? 1 : 0 },
          { labels: { source: 'workers' }, value: workers.status === 'fulfilled' ? 1 : 0 },
          ...sources.map((source, i) => ({ labels: { source: source.name }, value: extra[i]!.status === 'fulfilled' ? 1 : 0 })),
        ],
      });
      return formatFamilies(families) + (await processRegistry().metrics());
    },
  };
  return monitor;
}

function counterFamilies(snapshot: CounterSnapshot): MetricFamily[] {
  return [
    {
      name: 'user_sms_sends_total',
      help: 'Send attempts by enterprise and outcome (success, failed, unknown: final; retry, unconfirmed: not final).',
      type: 'counter',
      samples: snapshot.sends.map((s) => ({ labels: { enterprise: s.enterprise, outcome: s.outcome }, value: s.count })),
    },
    {
      name: 'user_sms_websms_request_duration_seconds',
      help: 'WebSMS send call duration by result (accepted, rejected, not-sent, unknown).',
      type: 'histogram',
      samples: snapshot.websms.flatMap((series) => [
        ...series.buckets.map((b) => ({
          suffix: '_bucket',
          labels: { result: series.result, le: Number.isFinite(b.leMs) ? String(b.leMs / 1_000) : '+Inf' },
          value: b.count,
        })),
        { suffix: '_sum', labels: { result: series.result }, value: series.sumMs / 1_000 },
        { suffix: '_count', labels: { result: series.result }, value: series.count },
      ]),
    },
    {
      name: 'user_sms_delivery_final_total',
      help: 'Sent messages whose delivery status became final, by enterprise and status (delivered, undelivered, unknown).',
      type: 'counter',
      samples: snapshot.delivery.map((d) => ({ labels: { enterprise: d.enterprise, status: d.status }, value: d.count })),
    },
    {
      name: 'user_sms_delivery_seconds',
      help: 'Time from the send to learning it was delivered (bounded below by the delivery checks\' schedule).',
      type: 'histogram',
      samples: [
        ...snapshot.deliveryTime.buckets.map((b) => ({ suffix: '_bucket', labels: { le: Number.isFinite(b.leS) ? String(b.leS) : '+Inf' }, value: b.count })),
        { suffix: '_sum', value: snapshot.deliveryTime.sumS },
        { suffix: '_count', value: snapshot.deliveryTime.count },
      ],
    },
    {
      name: 'user_sms_limiter_waits_total',
      help: 'Times a message had to wait for its enterprise rate-limit slot.',
      type: 'counter',
      samples: [{ value: snapshot.limiter.waits }],
    },
    {
      name: 'user_sms_limiter_wait_seconds_total',
      help: 'Total wait announced by the rate limiter for those messages.',
      type: 'counter',
      samples: [{ value: snapshot.limiter.waitMs / 1_000 }],
    },
  ];
}

function queueFamily(counts: Record<string, number>): MetricFamily {
  return {
    name: 'user_sms_queue_jobs',
    help: 'Jobs in the send queue by state.',
    type: 'gauge',
    samples: QUEUE_STATES.map((state) => ({ labels: { state }, value: counts[state] ?? 0 })),
  };
}

function workerFamilies(workers: WorkerHeartbeat[]): MetricFamily[] {
  const perWorker = (pick: (w: WorkerHeartbeat) => number) => workers.map((w) => ({ labels: { worker: w.id }, value: pick(w) }));
  return [
    { name: 'user_sms_workers_alive', help: 'Worker processes with a live heartbeat.', type: 'gauge', samples: [{ value: workers.length }] },
    {
      name: 'user_sms_worker_start_time_seconds',
      help: 'When each live worker process started (Unix time).',
      type: 'gauge',
      samples: perWorker((w) => Date.parse(w.startedAt) / 1_000),
    },
    {
      name: 'user_sms_worker_last_heartbeat_seconds',
      help: 'When each live worker process last reported (Unix time, its clock).',
      type: 'gauge',
      samples: perWorker((w) => Date.parse(w.beatAt) / 1_000),
    },
    {
      name: 'user_sms_worker_jobs_processed_total',
      help: 'Job runs each live worker process finished (completed, or failed and retried) since it started.',
      type: 'counter',
      samples: perWorker((w) => w.processed),
    },
    {
      name: 'user_sms_worker_dropped_metric_writes_total',
      help: 'Metric writes each live worker process dropped (Redis unavailable) since it started.',
      type: 'counter',
      samples: perWorker((w) => w.droppedMetricWrites),
    },
  ];
}

let processMetrics: Registry | undefined;

/** The API process's own CPU, memory and event-loop metrics (prom-client's defaults), one set per process. */
function processRegistry(): Registry {
  if (!processMetrics) {
    processMetrics = new Registry();
    collectDefaultMetrics({ register: processMetrics });
  }
  return processMetrics;
}
