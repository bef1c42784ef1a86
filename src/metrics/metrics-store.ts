import type { RedisClient } from '../redis-connection.ts';
import type { DeliveryMetrics, SendOutcomeLabel } from '../messages/deliver.ts';
import type { SendOutcome } from '../websms/client.ts';

// Cross-process counters. Workers count (HINCRBY, fire-and-forget); the API, the only process that
// serves HTTP, reads them on each scrape. A few small hashes under `${prefix}:metrics:*`: the
// prefix carries the queue's hash tag, so they share its Redis Cluster slot.
//
// Glossary
// - series: one label combination of one metric; the sends hash keeps one field per series.
// - dropped write: a counter update that failed (Redis down or slow). It is lost, never retried or
//   waited for, and counted in the process (reported through the worker heartbeat).

export type WebsmsCallResult = SendOutcome['kind'];

/**
 * Upper bounds (ms) of the WebSMS latency buckets. Fixed so that every process and every scrape
 * agree; they span a fast answer (tens of ms) to the 30 s call budget (WEBSMS_TIMEOUT_MS).
 */
export const WEBSMS_LATENCY_BUCKETS_MS: readonly number[] = [25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000];

/**
 * Enterprise is the only unbounded label. 5 outcomes × 1000 enterprises is a few thousand series,
 * which Prometheus takes easily; past that, further enterprises are counted under OTHER_ENTERPRISE
 * rather than growing the hash (and every scrape) without limit.
 */
export const MAX_SEND_SERIES = 5_000;

/**
 * Upper bounds (s) of the send → delivered buckets: the delivery checks' own schedule (1 min … 24 h,
 * DELIVERY_POLL_SCHEDULE_MS) decides when a delivery is learned, so the buckets follow it.
 */
export const DELIVERY_TIME_BUCKETS_S: readonly number[] = [60, 300, 900, 1_800, 3_600, 7_200, 21_600, 86_400];
export const OTHER_ENTERPRISE = '_other';

export function metricsKeys(prefix: string) {
  const base = `${prefix}:metrics`;
  return {
    /** field `${outcome}:${enterprise}` → count */
    sends: `${base}:sends`,
    /** fields `${result}:le:${bucketMs|inf}`, `${result}:sum_us`, `${result}:count` */
    websms: `${base}:websms`,
    /** fields `waits`, `wait_ms` */
    limiter: `${base}:limiter`,
    /** field `${deliveryStatus}:${enterprise}` → count of messages whose delivery status became final */
    delivery: `${base}:delivery`,
    /** fields `le:${bucketS|inf}`, `sum_ms`, `count`: send → delivered */
    deliveryTime: `${base}:delivery-time`,
    /** set of worker ids with a heartbeat key (worker-heartbeat.ts) */
    workers: `${base}:workers`,
    worker: (id: string) => `${base}:worker:${id}`,
  };
}

export interface MetricsRecorder extends DeliveryMetrics {
  /** A message's delivery status became final (src/delivery/); `sinceSendMs` for delivered ones. */
  deliveryFinal(enterpriseNumber: string, status: 'delivered' | 'undelivered' | 'unknown', sinceSendMs: number | null): void;
  /** Counter writes dropped since this process started. */
  droppedWrites(): number;
}

// Counts one send, folding enterprises beyond the series budget into OTHER_ENTERPRISE: checked and
// counted in one step, so concurrent workers cannot overshoot the budget.
const COUNT_SEND = `
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[3]) then
  return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
end
return redis.call('HINCRBY', KEYS[1], ARGV[2], 1)`;

/**
 * The delivery metrics port over Redis. Every method returns at once; a failed write is dropped
 * and counted, never thrown into the send.
 */
export function createMetricsRecorder(redis: RedisClient, prefix: string, options: { maxSendSeries?: number } = {}): MetricsRecorder {
  const keys = metricsKeys(prefix);
  const maxSendSeries = options.maxSendSeries ?? MAX_SEND_SERIES;
  let dropped = 0;

  const fire = (write: () => Promise<unknown>): void => {
    try {
      write().catch(() => {
        dropped += 1;
      });
    } catch {
      dropped += 1;
    }
  };
  /** A transaction's failures come back per command, not as a rejection. */
  const exec = async (transaction: ReturnType<RedisClient['multi']>): Promise<void> => {
    const results = await transaction.exec();
    if (!results || results.some(([error]) => error)) throw new Error('metrics transaction failed');
  };

  return {
    sendOutcome(enterpriseNumber: string, outcome: SendOutcomeLabel) {
      fire(() => redis.eval(COUNT_SEND, 1, keys.sends, `${outcome}:${enterpriseNumber}`, `${outcome}:${OTHER_ENTERPRISE}`, maxSendSeries));
    },
    websmsCall(durationMs: number, result: WebsmsCallResult) {
      const bucket = WEBSMS_LATENCY_BUCKETS_MS.find((le) => durationMs <= le) ?? 'inf';
      // Microseconds: sandbox and local calls take under a millisecond.
      const micros = Math.max(0, Math.round(durationMs * 1_000));
      fire(() =>
        exec(
          redis
            .multi()
            .hincrby(keys.websms, `${result}:le:${bucket}`, 1)
            .hincrby(keys.websms, `${result}:sum_us`, micros)
            .hincrby(keys.websms, `${result}:count`, 1),
        ),
      );
    },
    deliveryFinal(enterpriseNumber, status, sinceSendMs) {
      fire(() => redis.eval(COUNT_SEND, 1, keys.delivery, `${status}:${enterpriseNumber}`, `${status}:${OTHER_ENTERPRISE}`, maxSendSeries));
      if (status !== 'delivered' || sinceSendMs === null) return;
      const bucket = DELIVERY_TIME_BUCKETS_S.find((le) => sinceSendMs <= le * 1_000) ?? 'inf';
      fire(() =>
        exec(
          redis
            .multi()
            .hincrby(keys.deliveryTime, `le:${bucket}`, 1)
            .hincrby(keys.deliveryTime, 'sum_ms', Math.max(0, Math.round(sinceSendMs)))
            .hincrby(keys.deliveryTime, 'count', 1),
        ),
      );
    },
    limiterWait(waitMs: number) {
      fire(() => exec(redis.multi().hincrby(keys.limiter, 'waits', 1).hincrby(keys.limiter, 'wait_ms', Math.max(0, Math.round(waitMs)))));
    },
    droppedWrites: () => dropped,
  };
}

export interface LatencySeries {
  result: string;
  /** Cumulative counts per upper bound (ms), ending with Infinity, as Prometheus wants them. */
  buckets: Array<{ leMs: number; count: number }>;
  sumMs: number;
  count: number;
}

export interface CounterSnapshot {
  sends: Array<{ enterprise: string; outcome: string; count: number }>;
  websms: LatencySeries[];
  limiter: { waits: number; waitMs: number };
  delivery: Array<{ enterprise: string; status: string; count: number }>;
  /** send → delivered: cumulative counts per upper bound (s), ending with Infinity */
  deliveryTime: { buckets: Array<{ leS: number; count: number }>; sumS: number; count: number };
}

/** Everything the workers have counted, as of one read (a single transaction). */
export async function readCounters(redis: RedisClient, prefix: string): Promise<CounterSnapshot> {
  const keys = metricsKeys(prefix);
  const results = await redis.multi().hgetall(keys.sends).hgetall(keys.websms).hgetall(keys.limiter).hgetall(keys.delivery).hgetall(keys.deliveryTime).exec();
  if (!results) throw new Error('metrics read was aborted');
  const [sends, websms, limiter, delivery, deliveryTime] = results.map(([error, value]) => {
    if (error) throw error;
    return value as Record<string, string>;
  }) as [Record<string, string>, Record<string, string>, Record<string, string>, Record<string, string>, Record<string, string>];
  let cumulative = 0;

  return {
    sends: Object.entries(sends).map(([field, count]) => {
      const separator = field.indexOf(':');
      return { outcome: field.slice(0, separator), enterprise: field.slice(separator + 1), count: Number(count) };
    }),
    websms: latencySeries(websms),
    limiter: { waits: Number(limiter.waits ?? 0), waitMs: Number(limiter.wait_ms ?? 0) },
    delivery: Object.entries(delivery).map(([field, count]) => {
      const separator = field.indexOf(':');
      return { status: field.slice(0, separator), enterprise: field.slice(separator + 1), count: Number(count) };
    }),
    deliveryTime: {
      buckets: [...DELIVERY_TIME_BUCKETS_S, Infinity].map((leS) => {
        cumulative += Number(deliveryTime[`le:${Number.isFinite(leS) ? leS : 'inf'}`] ?? 0);
        return { leS, count: cumulative };
      }),
      sumS: Number(deliveryTime.sum_ms ?? 0) / 1_000,
      count: Number(deliveryTime.count ?? 0),
    },
  };
}

function latencySeries(fields: Record<string, string>): LatencySeries[] {
  const results = new Set(Object.keys(fields).map((field) => field.slice(0, field.indexOf(':'))));
  return [...results].sort().map((result) => {
    let cumulative = 0;
    const buckets = [...WEBSMS_LATENCY_BUCKETS_MS, Infinity].map((leMs) => {
      cumulative += Number(fields[`${result}:le:${Number.isFinite(leMs) ? leMs : 'inf'}`] ?? 0);
      return { leMs, count: cumulative };
    });
    return {
      result,
      buckets,
      sumMs: Number(fields[`${result}:sum_us`] ?? 0) / 1_000,
      count: Number(fields[`${result}:count`] ?? 0),
    };
  });
}
