import http from 'node:http';
import autocannon from 'autocannon';
import { ACCOUNTS } from './stack.ts';

// Load generators, both in this process and aimed only at 127.0.0.1.
// - closed loop (autocannon): N clients, each sending its next request when the previous one is
//   answered, as the guide's "50 concurrent clients". Its throughput is the maximum at that
//   concurrency.
// - paced (node:http): requests started at an even rate whatever the answers do (open loop), for
//   latency at a given fraction of the maximum. autocannon's own rate option sends each second's
//   quota in a burst at the top of the second, which measures a full-concurrency burst, not a load.

export interface LatencySummary {
  count: number;
  mean: number;
  p50: number;
  p75: number;
  p90: number;
  p95: number;
  p99: number;
  p999: number;
  max: number;
}

export interface LoadResult {
  label: string;
  kind: 'closed' | 'paced';
  durationS: number;
  /** requests answered */
  requests: number;
  /** answered with the expected final outcome: 200 + success:true */
  ok: number;
  /** answered/s over the run */
  throughputPerS: number;
  /** ok/s over the run */
  okPerS: number;
  statuses: Record<string, number>;
  errors: number;
  timeouts: number;
  /** latency of every answered request, ms; summarised for the report, kept for the chart */
  latency: LatencySummary;
  /** a few answers that were not 200 + success, for diagnosis */
  examples: Array<{ status: number; body: string }>;
  /** for paced runs: the rate asked for */
  targetRatePerS?: number;
  samples: Float64Array;
}

export function summarise(values: ArrayLike<number>): LatencySummary {
  const sorted = Float64Array.from(values).sort();
  const at = (q: number) => (sorted.length === 0 ? Number.NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!);
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: sorted.length,
    mean: sorted.length ? sum / sorted.length : Number.NaN,
    p50: at(0.5),
    p75: at(0.75),
    p90: at(0.9),
    p95: at(0.95),
    p99: at(0.99),
    p999: at(0.999),
    max: sorted.length ? sorted[sorted.length - 1]! : Number.NaN,
  };
}

/** What one request sends: a new message body per request, enterprises round-robin. */
export interface MessageSource {
  /** JSON body for POST /send */
  sendBody(): string;
  /** path for a direct GET send/sms on the sandbox (same parameters as the worker's call) */
  directPath(): string;
}

/**
 * Round-robin over enterprises `${prefix}0 … ${prefix}(n-1)`, shared by every run on one stack so
 * that at R sends/s each enterprise gets a message every n/R seconds: n ≥ 20·R keeps any four
 * consecutive sends of one enterprise more than 60 s apart, under the real 3-per-60-s limit.
 * `extra`: fields added to every body (a callback_url, say).
 */
export function roundRobinSource(
  prefix: string,
  enterprises: number,
  start = 0,
  extra: Record<string, unknown> = {},
): MessageSource & { sent(): number; with(extra: Record<string, unknown>): MessageSource } {
  let next = start;
  let direct = 0;
  const phone = (n: number) => `+37529${String(1_000_000 + (n % 8_999_999))}`;
  const body = (fields: Record<string, unknown>) => {
    const n = next++;
    return JSON.stringify({ enterprise_number: `${prefix}${n % enterprises}`, phone: phone(n), text: `Bench message ${n}`, ...fields });
  };
  const directPath = () => {
    const n = direct++;
    const params = new URLSearchParams({
      user: ACCOUNTS.direct.user,
      apikey: ACCOUNTS.direct.apiKey,
      msisdn: phone(n).slice(1),
      text: `Bench message ${n}`,
      sender: 'Vochi-CRM',
      custom_id: `d${n}`,
    });
    return `/api/send/sms?${params.toString()}`;
  };
  return {
    sendBody: () => body(extra),
    directPath,
    /** The same round, with more fields: runs that take turns never send for one enterprise too soon. */
    with: (more) => ({ sendBody: () => body({ ...extra, ...more }), directPath }),
    sent: () => next - start,
  };
}

const JSON_HEADERS = { 'content-type': 'application/json' };

/** N clients in a closed loop for `durationS` against the service's POST /send or the sandbox. */
export async function closedLoop(options: {
  label: string;
  origin: string;
  target: 'service' | 'direct';
  source: MessageSource;
  connections: number;
  /** run for this long … */
  durationS?: number;
  /** … or until this many requests were answered */
  amount?: number;
}): Promise<LoadResult> {
  const samples: number[] = [];
  const statuses: Record<string, number> = {};
  const examples: LoadResult['examples'] = [];
  let ok = 0;
  const started = performance.now();
  const request: autocannon.Request =
    options.target === 'service'
      ? {
          method: 'POST',
          path: '/send',
          headers: JSON_HEADERS,
          setupRequest: (req) => ({ ...req, body: options.source.sendBody() }),
          onResponse: (status, body) => {
            if (status === 200 && body.includes('"success":true')) ok += 1;
            else if (examples.length < 5) examples.push({ status, body: body.slice(0, 300) });
          },
        }
      : {
          method: 'GET',
          setupRequest: (req) => ({ ...req, path: options.source.directPath() }),
          onResponse: (status, body) => {
            if (status === 200 && body.includes('"status":true')) ok += 1;
            else if (examples.length < 5) examples.push({ status, body: body.slice(0, 300) });
          },
        };
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      {
        url: options.origin,
        connections: options.connections,
        ...(options.amount === undefined ? { duration: options.durationS ?? 10 } : { amount: options.amount }),
        // Above SEND_WAIT_MS: a 202 after the service's own wait is an answer, not a timeout.
        timeout: 30,
        requests: [request],
      },
      (error: unknown, res) => (error ? reject(error instanceof Error ? error : new Error('autocannon failed')) : resolve(res)),
    );
    instance.on('response', (_client, statusCode: number, _bytes, responseTime: number) => {
      samples.push(responseTime);
      statuses[statusCode] = (statuses[statusCode] ?? 0) + 1;
    });
  });
  const durationS = (performance.now() - started) / 1000;
  return {
    label: options.label,
    kind: 'closed',
    durationS,
    requests: samples.length,
    ok,
    throughputPerS: samples.length / durationS,
    okPerS: ok / durationS,
    statuses,
    errors: result.errors - result.timeouts,
    timeouts: result.timeouts,
    latency: summarise(samples),
    examples,
    samples: Float64Array.from(samples),
  };
}

/** Requests started at `ratePerS`, evenly spaced, at most `maxInFlight` open connections. */
export async function paced(options: {
  label: string;
  origin: string;
  source: MessageSource;
  ratePerS: number;
  durationS: number;
  maxInFlight: number;
  /** each answer with when its request was sent and its answer read (ms on the machine's monotonic clock, as process.hrtime) */
  onAnswer?: (answer: { sentAt: number; answeredAt: number; body: string }) => void;
}): Promise<LoadResult> {
  const url = new URL(options.origin);
  const agent = new http.Agent({ keepAlive: true, maxSockets: options.maxInFlight });
  const samples: number[] = [];
  const statuses: Record<string, number> = {};
  const examples: LoadResult['examples'] = [];
  let ok = 0;
  let errors = 0;
  let timeouts = 0;
  const pending = new Set<Promise<void>>();
  const intervalMs = 1000 / options.ratePerS;
  const total = Math.round(options.ratePerS * options.durationS);

  const fire = () => {
    const body = options.source.sendBody();
    const sentAt = performance.now();
    const sentAtHr = process.hrtime.bigint();
    const done = new Promise<void>((resolve) => {
      const req = http.request(
        { host: url.hostname, port: url.port, path: '/send', method: 'POST', agent, headers: { ...JSON_HEADERS, 'content-length': Buffer.byteLength(body) }, timeout: 30_000 },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (chunk: Buffer) => chunks.push(chunk));
          res.on('end', () => {
            const answeredAt = performance.now();
            samples.push(answeredAt - sentAt);
            const status = res.statusCode ?? 0;
            statuses[status] = (statuses[status] ?? 0) + 1;
            const text = Buffer.concat(chunks).toString('utf8');
            options.onAnswer?.({ sentAt: Number(sentAtHr) / 1e6, answeredAt: Number(process.hrtime.bigint()) / 1e6, body: text });
            if (status === 200 && text.includes('"success":true')) ok += 1;
            else if (examples.length < 5) examples.push({ status, body: text.slice(0, 300) });
            resolve();
          });
          res.on('error', () => {
            errors += 1;
            resolve();
          });
        },
      );
      req.on('timeout', () => {
        timeouts += 1;
        req.destroy(new Error('timeout'));
      });
      req.on('error', () => {
        errors += 1;
        resolve();
      });
      req.end(body);
    });
    pending.add(done);
    void done.then(() => pending.delete(done));
  };

  const started = performance.now();
  let fired = 0;
  while (fired < total) {
    const due = Math.min(total, Math.floor((performance.now() - started) / intervalMs) + 1);
    while (fired < due) {
      fire();
      fired += 1;
    }
    const nextAt = started + fired * intervalMs;
    await new Promise((r) => setTimeout(r, Math.max(0, nextAt - performance.now())));
  }
  await Promise.all(pending);
  const durationS = (performance.now() - started) / 1000;
  agent.destroy();
  return {
    label: options.label,
    kind: 'paced',
    durationS,
    requests: samples.length,
    ok,
    throughputPerS: samples.length / durationS,
    okPerS: ok / durationS,
    statuses,
    errors,
    timeouts,
    latency: summarise(samples),
    examples,
    targetRatePerS: options.ratePerS,
    samples: Float64Array.from(samples),
  };
}

/** One POST /send, waiting for its outcome; the latency in ms. */
export async function sendOne(origin: string, body: object, query = ''): Promise<{ status: number; latencyMs: number; body: Record<string, unknown> }> {
  const started = performance.now();
  const response = await fetch(`${origin}/send${query}`, {
    method: 'POST',
    headers: JSON_HEADERS,
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const parsed = (await response.json()) as Record<string, unknown>;
  return { status: response.status, latencyMs: performance.now() - started, body: parsed };
}
