import type { RedisClient } from '../redis-connection.ts';
import type { DeliveryMetrics, SendOutcomeLabel } from '../messages/deliver.ts';
import type { SendOutcome } from '../websms/client.ts';

// Cross-process counters. Workers count in memory and add their counts to Redis once a second (one
// transaction, never waited for); the API, the only process that serves HTTP, reads them on each
// scrape. A few small hashes under `${prefix}:metrics:*`: the
// prefix carries the queue's hash tag, so they share its Redis Cluster slot.
//
// Glossary
// - series: one label combination of one metric; the sends hash keeps one field per series.
// - dropped write: a counter update that failed (Redis down or slow). It is lost, never retried or
//   waited for, and counted in the process (reported through the worker heartbeat): a failed write of
//   folded counts drops each send, call or wait it held.

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
  /** Counter increments dropped since this process started (a write that failed loses its increments). */
  droppedWrites(): number;
  /** Writes what has been counted so far and stops counting into Redis. */
  close(): Promise<void>;
}

// Adds counts to series, folding a new series beyond the budget into its OTHER_ENTERPRISE series:
// checked and counted in one step, so concurrent workers cannot overshoot the budget. ARGV: the
// budget, then (field, fallback field, increment) for each series, in the order they were first seen.
const COUNT_SERIES = `
local budget = tonumber(ARGV[1])
for i = 2, #ARGV, 3 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 or redis.call('HLEN', KEYS[1]) < budget then
    redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 2])
  else
    redis.call('HINCRBY', KEYS[1], ARGV[i + 1], ARGV[i + 2])
  end
end
return 1`;

/** How often counts are written: scrapes come every 15 s or so; one write a second costs nothing. */
const FLUSH_MS = 1_000;

/** Counts waiting to be written: hash key → field → increment (a Map keeps first-seen order). */
type Pending = Map<string, Map<string, number>>;

/**
 * The delivery metrics port over Redis. Counts in memory and writes them folded, once a second, in one
 * transaction (a scrape never sees a histogram's count without its bucket): not one write per send.
 * Every method returns at once; a failed write is dropped and counted, never thrown into the send,
 * and at most a second of counts is lost with a process that dies.
 */
export function createMetricsRecorder(redis: RedisClient, prefix: string, options: { maxSendSeries?: number; flushMs?: number } = {}): MetricsRecorder {
  const keys = metricsKeys(prefix);
  const maxSendSeries = options.maxSendSeries ?? MAX_SEND_SERIES;
  /** hashes whose new series count against the budget */
  const budgeted = new Set([keys.sends, keys.delivery]);
  let pending: Pending = new Map();
  let dropped = 0;

  const add = (key: string, field: string, by: number) => {
    let fields = pending.get(key);
    if (!fields) pending.set(key, (fields = new Map<string, number>()));
    fields.set(field, (fields.get(field) ?? 0) + by);
  };
  /** Increments of a series (or a histogram's observation, counted once) */
  const increments = (batch: Pending) => {
    let total = 0;
    for (const [key, fields] of batch) {
      if (key === keys.websms || key === keys.deliveryTime) {
        for (const [field, n] of fields) if (field.endsWith(':count') || field === 'count') total += n;
      } else if (key === keys.limiter) total += fields.get('waits') ?? 0;
      else for (const n of fields.values()) total += n;
    }
    return total;
  };

  async function flush(): Promise<void> {
    if (pending.size === 0) return;
    const batch = pending;
    pending = new Map();
    try {
      const transaction = redis.multi();
      for (const [key, fields] of batch) {
        if (budgeted.has(key)) {
          const series = [...fields].flatMap(([field, n]) => [field, `${field.slice(0, field.indexOf(':'))}:${OTHER_ENTERPRISE}`, n]);
          transaction.eval(COUNT_SERIES, 1, key, maxSendSeries, ...series);
        } else {
          for (const [field, n] of fields) transaction.hincrby(key, field, n);
        }
      }
      const results = await transaction.exec();
      if (!results || results.some(([error]) => error)) throw new Error('metrics transaction failed');
    } catch {
      dropped += increments(batch);
    }
  }
  const timer = setInterval(() => void flush(), options.flushMs ?? FLUSH_MS).unref();

  return {
    sendOutcome(enterpriseNumber: string, outcome: SendOutcomeLabel) {
      add(keys.sends, `${outcome}:${enterpriseNumber}`, 1);
    },
    websmsCall(durationMs: number, result: WebsmsCallResult) {
      const bucket = WEBSMS_LATENCY_BUCKETS_MS.find((le) => durationMs <= le) ?? 'inf';
      add(keys.websms, `${result}:le:${bucket}`, 1);
      // Microseconds: sandbox and local calls take under a millisecond.
      add(keys.websms, `${result}:sum_us`, Math.max(0, Math.round(durationMs * 1_000)));
      add(keys.websms, `${result}:count`, 1);
    },
    deliveryFinal(enterpriseNumber, status, sinceSendMs) {
      add(keys.delivery, `${status}:${enterpriseNumber}`, 1);
      if (status !== 'delivered' || sinceSendMs === null) return;
      const bucket = DELIVERY_TIME_BUCKETS_S.find((le) => sinceSendMs <= le * 1_000) ?? 'inf';
      add(keys.deliveryTime, `le:${bucket}`, 1);
      add(keys.deliveryTime, 'sum_ms', Math.max(0, Math.round(sinceSendMs)));
      add(keys.deliveryTime, 'count', 1);
    },
    limiterWait(waitMs: number) {
      add(keys.limiter, 'waits', 1);
      add(keys.limiter, 'wait_ms', Math.max(0, Math.round(waitMs)));
    },
    droppedWrites: () => dropped,
    async close() {
      clearInterval(timer);
      await flush();
    },
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
