import type { RedisClient } from '../redis-connection.ts';
import type { Db } from '../db/database.ts';
import { formatFamilies, type MetricFamily } from '../metrics/exposition.ts';
import { countOpenEvents } from './callback-repository.ts';
import type { CallbackMetrics } from './deliver-callback.ts';

// Callback counters, counted by the workers (one Redis hash, fire-and-forget like the send counters:
// a failed write is dropped, never waited for) and read by the API on each scrape, with the number of
// events pending and given up right now from PostgreSQL. Labels are event types only.

export function callbackMetricsKey(prefix: string): string {
  return `${prefix}:metrics:callbacks`;
}

const COUNTERS = ['delivered', 'failed_attempts', 'given_up'] as const;

export function createCallbackMetrics(redis: RedisClient, prefix: string): CallbackMetrics {
  const key = callbackMetricsKey(prefix);
  const count = (counter: (typeof COUNTERS)[number], type: string) => {
    try {
      redis.hincrby(key, `${counter}:${type}`, 1).catch(() => undefined);
    } catch {
      // dropped: monitoring never fails a delivery
    }
  };
  return {
    delivered: (type) => count('delivered', type),
    failedAttempt: (type) => count('failed_attempts', type),
    givenUp: (type) => count('given_up', type),
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
