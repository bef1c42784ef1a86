import type { RedisClient } from '../redis-connection.ts';
import type { Db } from '../db/database.ts';
import { formatFamilies, type MetricFamily } from '../metrics/exposition.ts';
import { countOpenEvents } from './callback-repository.ts';
import type { CallbackMetrics } from './callback-dispatcher.ts';

// Callback counters, counted by the workers (one Redis hash, written folded once a second, never
// waited for by a delivery: a failed write is dropped) and read by the API on each scrape, with the
// number of events pending and given up right now from PostgreSQL. Labels are event types only.

export function callbackMetricsKey(prefix: string): string {
  return `${prefix}:metrics:callbacks`;
}

const COUNTERS = ['delivered', 'failed_attempts', 'given_up'] as const;

/** How often counts are written: monitoring scrapes every 15 s or so, and one write per second costs nothing. */
const FLUSH_MS = 1_000;

export interface CallbackCounters extends CallbackMetrics {
  /** Writes what has been counted so far (done every second until then) and stops. */
  close(): Promise<void>;
}

/** Counts in memory and writes them folded, one HINCRBY per counter and type each second, not one per event. */
export function createCallbackMetrics(redis: RedisClient, prefix: string): CallbackCounters {
  const key = callbackMetricsKey(prefix);
  const counts = new Map<string, number>();
  const count = (counter: (typeof COUNTERS)[number], type: string) => {
    const field = `${counter}:${type}`;
    counts.set(field, (counts.get(field) ?? 0) + 1);
  };
  async function flush(): Promise<void> {
    if (counts.size === 0) return;
    const fields = [...counts];
    counts.clear();
    try {
      const pipeline = redis.pipeline();
      for (const [field, n] of fields) pipeline.hincrby(key, field, n);
      await pipeline.exec();
    } catch {
      // dropped: monitoring never fails a delivery
    }
  }
  const timer = setInterval(() => void flush(), FLUSH_MS).unref();
  return {
    delivered: (type) => count('delivered', type),
    failedAttempt: (type) => count('failed_attempts', type),
    givenUp: (type) => count('given_up', type),
    async close() {
      clearInterval(timer);
      await flush();
    },
  };
}

const HELP: Record<(typeof COUNTERS)[number], [string, string]> = {
  delivered: ['user_sms_callbacks_delivered_total', 'Callback events delivered (answered 2xx), by event type.'],
  failed_attempts: ['user_sms_callback_failed_attempts_total', 'Callback delivery attempts that failed (no 2xx in time, refused host) and will be retried or given up, by event type.'],
  given_up: ['user_sms_callbacks_given_up_total', 'Callback events given up after their retry window, by event type (npm run jobs -- callbacks).'],
};

/** The callback families of /metrics; a source that cannot be read is left out. */
export async function callbackMetricsText(redis: RedisClient, db: Db, prefix: string): Promise<string> {
  const [counters, open] = await Promise.allSettled([redis.hgetall(callbackMetricsKey(prefix)), countOpenEvents(db)]);
  const families: MetricFamily[] = [];
  if (counters.status === 'fulfilled') {
    for (const counter of COUNTERS) {
      const [name, help] = HELP[counter];
      const samples = Object.entries(counters.value)
        .filter(([field]) => field.startsWith(`${counter}:`))
        .map(([field, value]) => ({ labels: { type: field.slice(counter.length + 1) }, value: Number(value) }));
      families.push({ name, help, type: 'counter', samples });
    }
  }
  if (open.status === 'fulfilled') {
    families.push({
      name: 'user_sms_callback_events',
      help: 'Callback events now pending (on their way or waiting to retry) and given up (until an operator retries them).',
      type: 'gauge',
      samples: [
        { labels: { state: 'pending' }, value: open.value.pending },
        { labels: { state: 'given_up' }, value: open.value.givenUp },
      ],
    });
  }
  return formatFamilies(families);
}
