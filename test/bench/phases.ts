import { collectAnswers, recordSendPhases, sendPhaseBreakdown, type ClientAnswer, type PhaseBreakdown } from './phase-breakdown.ts';
import { SendLedger, statusCounts, waitForFinalStates, windowViolations, type CheckResult } from './checks.ts';
import { closedLoop, paced, roundRobinSource, sendOne, summarise, type LatencySummary, type LoadResult, type MessageSource } from './load.ts';
import { CpuMeter, findPostgresBackends, GROUPS, pgWriteSnapshot, redisCommandCount, pgWritesBetween, rssRecorder, sampleRss, type CpuByGroup, type Group, type PgWritesPerMessage, type RssSample } from './measurements.ts';
import type { BenchOptions } from './options.ts';
import { ACCOUNTS, countKeys, liveHeapMb, startService, type Bench, type Service } from './stack.ts';

// The measurements of ../shared/guides/benchmarks.md, each on a running stack. Every phase waits
// until all of its messages are final before the next one starts, so that CPU figures cover whole
// messages and the sandbox's record can be checked and cleared between runs.

/** Service users whose calls the checks read (the direct load has its own account). */
export const SERVICE_USERS: ReadonlySet<string> = new Set([ACCOUNTS.service.user, ACCOUNTS.limited.user]);

export type RunSummary = Omit<LoadResult, 'samples'>;

export interface CpuPerMessage {
  /** ms of CPU per message, by process group; null: not measurable here */
  byGroup: Record<Group, number | null>;
  /** the service's own processes plus PostgreSQL and Redis: what a deployment pays per message */
  serviceTotal: number;
  /** everything on the machine that worked for these messages, load generator and sandbox included */
  machineTotal: number;
  messages: number;
}

export interface ThroughputResult {
  latencyMs: number;
  direct: RunSummary;
  service: RunSummary;
  /** service ok/s ÷ direct ok/s, same clients, same run */
  ratio: number;
  cpu: CpuPerMessage;
  directCpu: CpuPerMessage;
  /** what PostgreSQL wrote per message */
  writes: PgWritesPerMessage;
}

/** p50, p90, p99 in ms of a send's two hops inside the service, from its row */
export interface LatencyBreakdown {
  insertToClaim: number[];
  claimToRecordedMinusSandbox: number[];
}

export interface OverheadResult {
  latencyMs: number;
  /** one request at a time on an otherwise idle service, rather than paced at a fraction of the maximum */
  oneAtATime: boolean;
  run: RunSummary;
  /** end-to-end latency minus the sandbox latency */
  overhead: LatencySummary;
  /**
   * Where a message's time goes, from the row's own timestamps (p50/p90/p99, ms): insert → claim
   * (enqueue, worker pick-up, limiter, the claim itself) and claim → outcome recorded (WebSMS call
   * minus the sandbox latency, the outcome UPDATE). The rest of the end-to-end time is the API before
   * the insert and after the outcome (job completion, event stream, answer).
   */
  breakdown: LatencyBreakdown;
  /** one at a time only: the same, hop by hop, from the phases the service publishes (phase-breakdown.ts) */
  phases?: PhaseBreakdown | undefined;
  cpu: CpuPerMessage;
}

/** MB per process (api, worker1 …): resident set, and live heap after a full collection. */
export interface MemorySample {
  rss: Record<string, number | null>;
  liveHeap: Record<string, number | null>;
}

export interface MemoryResult {
  idle: MemorySample;
  afterLoad: MemorySample;
  soak?: {
    seconds: number;
    latencyMs: number;
    run: RunSummary;
    at10s: MemorySample;
    atEnd: MemorySample;
    /** RSS every second during the run */
    samples: RssSample[];
  };
}

export interface RateLimitResult {
  backlog: number;
  workers: number;
  limit: number;
  windowMs: number;
  marginMs: number;
  latencyMs: number;
  /** ms after the first send, as WebSMS (the sandbox) received them */
  sendOffsetsMs: number[];
  sent: number;
  drainMs: number;
  /** sends/s after the first window's burst: (n − limit) / (t_last − t_first) */
  achievedPerS: number;
  allowedPerS: number;
  /** achieved ÷ allowed (limit per window); the margin alone caps it at window / (window + margin) */
  fractionOfAllowed: number;
  fractionOfEffective: number;
  windowsOverLimit: number;
  /** the same count on the limiter's own grant times (Redis clock), against window + margin */
  grantWindowsOverLimit: number;
  grants: number;
  /** the shortest time, as WebSMS received them, spanned by limit + 1 consecutive sends (≥ window: no violation) */
  closestWindowMs: number | null;
  /** from the limiter's grant (Redis clock) to WebSMS's receipt: the jitter the margin must cover */
  grantToArrivalMs: LatencySummary;
  /** another enterprise's single message, sent while the backlog drains, waited for */
  otherEnterprise: { probes: number; latencyMs: LatencySummary; statuses: Record<string, number>; samples: Array<{ atMs: number; latencyMs: number }> };
}

/**
 * The cost of delivery status and callbacks: the same closed loop on two stacks, one that never asks
 * WebSMS about delivery and raises no callback, one that asks about every message (the sandbox
 * reports it final within 0.3 s, so one look-up each) and delivers two callbacks per message
 * (message.sent, message.delivered) to a receiver in a process of its own. The two take turns over
 * several rounds, so that a machine whose speed drifts does not favour either.
 */
export interface DeliveryCostResult {
  latencyMs: number;
  /** each round: the baseline's run, then the same run with delivery */
  rounds: Array<{ baselineOkPerS: number; withDeliveryOkPerS: number; ratio: number }>;
  /** the round whose ratio is the median: its runs, CPU and writes are the ones below */
  baseline: RunSummary;
  withDelivery: RunSummary;
  /** the median of the rounds' withDelivery ok/s ÷ baseline ok/s */
  throughputRatio: number;
  /** CPU per message includes the look-ups and callbacks, finished after the load */
  cpuBaseline: CpuPerMessage;
  cpuWithDelivery: CpuPerMessage;
  /** what PostgreSQL wrote per message, look-ups and callbacks included */
  writesBaseline: PgWritesPerMessage;
  writesWithDelivery: PgWritesPerMessage;
  /** of withDelivery's successful messages: how many got a final delivery status, how many callbacks were delivered */
  messages: number;
  deliveryFinal: number;
  callbacksReceived: number;
  /** from the end of the load until every look-up and callback was done */
  drainMs: number;
  /**
   * The send latency at steady rates, shares of the baseline's (--delivery-loads): what a caller sees
   * when the machine is not saturated. The first share is the latency target's.
   */
  paced: PacedDeliveryComparison[];
}

/** Both stacks paced at one rate, taking turns over the rounds. */
export interface PacedDeliveryComparison {
  /** the rate as a share of the median closed-loop round's baseline */
  loadFraction: number;
  ratePerS: number;
  /** each round's p50 without and with delivery; baseline and withDelivery are the round whose p50 grew by the median */
  rounds: Array<{ baselineP50: number; withDeliveryP50: number; baselineBreakdown: LatencyBreakdown; withDeliveryBreakdown: LatencyBreakdown }>;
  baseline: RunSummary;
  withDelivery: RunSummary;
  /** the median round, hop by hop, without and with delivery (phase-breakdown.ts) */
  phases: { baseline: PhaseBreakdown | undefined; withDelivery: PhaseBreakdown | undefined };
}

export interface LinesResult {
  enterprises: number;
  perEnterprise: number;
  workers: number;
  limit: number;
  windowMs: number;
  marginMs: number;
  latencyMs: number;
  /** how long accepting every message took (one stream per enterprise, ?wait=false) */
  acceptMs: number;
  /** job runs (BullMQ attemptsStarted) per message */
  runsPerMessage: { mean: number; max: number };
  /** pairs of one enterprise's messages WebSMS received in the opposite order to their ids */
  outOfOrderPairs: number;
  /** |WebSMS's arrival − the 202's expected_send_at| */
  etaErrorMs: LatencySummary;
  /** the 202's expected_send_at minus WebSMS's arrival: > 0 early, < 0 late */
  etaSignedErrorMs: LatencySummary;
  windowsOverLimit: number;
  /** the slowest line, first to last arrival, and what window + margin allow for it */
  drainMs: number;
  allowedDrainMs: number;
  otherEnterprise: { probes: number; latencyMs: LatencySummary; statuses: Record<string, number> };
  cpu: CpuPerMessage;
}

export interface ScaleResult {
  enterprises: number;
  /** the baseline run: half as many messages over this many enterprises */
  baselineEnterprises: number;
  run: RunSummary;
  rateKeysAfterLoad: number;
  /** MEMORY USAGE of a sample of limiter keys, bytes per key */
  bytesPerRateKey: number | null;
  rateKeysAfterWindow: number;
  waitedMs: number;
  /** every key under the queue prefix (per-message job records, kept KEEP_FINISHED_JOBS_S) */
  queueKeysAfterWindow: number;
  /** before the baseline, after it (= before the distinct enterprises), and after them */
  start: MemorySample;
  before: MemorySample;
  after: MemorySample;
}

function strip(result: LoadResult): RunSummary {
  const { samples: _samples, ...rest } = result;
  return rest;
}

function serviceProcesses(service: Service): Array<{ name: string; pid: number }> {
  return [service.api, ...service.workers, service.background].map((p) => ({ name: p.name, pid: p.pid }));
}

async function messageCount(bench: Bench): Promise<number> {
  return (await statusCounts(bench.sql)).total;
}

export class StackRunner {
  readonly meter: CpuMeter;
  private readonly bench: Bench;
  readonly service: Service;
  private readonly ledger: SendLedger;
  private readonly options: BenchOptions;
  readonly checks: CheckResult[] = [];

  /** `standIns`: processes beside the sandbox that stand for the world outside (a callback receiver) */
  constructor(bench: Bench, service: Service, ledger: SendLedger, options: BenchOptions, redisPid: number | undefined, standIns: readonly number[] = []) {
    this.bench = bench;
    this.service = service;
    this.ledger = ledger;
    this.options = options;
    const database = new URL(bench.database.url).pathname.slice(1);
    this.meter = new CpuMeter(async () => ({
      api: [service.api.pid],
      workers: service.workers.map((w) => w.pid),
      background: [service.background.pid],
      sandbox: [bench.sandbox.process.pid, ...standIns],
      redis: redisPid === undefined ? [] : [redisPid],
      postgres: await findPostgresBackends(bench.sql, database),
    }));
  }

  /**
   * After a run: wait until every message is final (bounded), move the sandbox's record into the
   * ledger and clear the sandbox. A message still unfinished is a failed check, and the sandbox is
   * then left as it is, since a lookup may still need what it remembers.
   */
  async settle(label: string, timeoutMs = 60_000): Promise<void> {
    const counts = await waitForFinalStates(this.bench.sql, timeoutMs);
    this.ledger.add(await this.bench.sandbox.calls(), SERVICE_USERS);
    if (counts.unfinished > 0) {
      this.checks.push({ name: `all messages final after ${label}`, passed: false, detail: `${counts.unfinished} still unfinished after ${timeoutMs} ms: ${JSON.stringify(counts.byStatus)}` });
      return;
    }
    await this.bench.sandbox.reset();
  }

  /** `afterRun`: work the messages still cause after the load (delivery look-ups, callbacks), counted in their CPU. */
  async measure<T>(run: () => Promise<T>, label: string, afterRun?: () => Promise<void>): Promise<{ result: T; cpu: CpuPerMessage; writes: PgWritesPerMessage }> {
    const before = await messageCount(this.bench);
    const writesStart = await pgWriteSnapshot(this.bench.sql);
    const redisStart = await redisCommandCount(this.bench.redis);
    const start = await this.meter.snapshot();
    const result = await run();
    await afterRun?.();
    await this.settle(label);
    const end = await this.meter.snapshot();
    const writesEnd = await pgWriteSnapshot(this.bench.sql);
    const redisCommands = (await redisCommandCount(this.bench.redis)) - redisStart;
    const messages = (await messageCount(this.bench)) - before;
    const writes = { ...pgWritesBetween(writesStart, writesEnd, messages), redisCommands: messages === 0 ? 0 : Math.round((redisCommands / messages) * 100) / 100 };
    return { result, cpu: perMessage(CpuMeter.between(start, end), messages), writes };
  }

  rss(): Record<string, number | null> {
    return sampleRss(serviceProcesses(this.service)).byProcess;
  }

  async memory(): Promise<MemorySample> {
    const processes = [this.service.api, ...this.service.workers, this.service.background];
    const heaps = await Promise.all(processes.map((p) => liveHeapMb(p)));
    return { rss: this.rss(), liveHeap: Object.fromEntries(processes.map((p, i) => [p.name, heaps[i] ?? null])) };
  }

  async throughput(source: MessageSource, latencyMs: number): Promise<ThroughputResult> {
    const { connections, durationS } = this.options;
    await this.bench.sandbox.setLatency(latencyMs);
    const directStart = await this.meter.snapshot();
    const direct = await closedLoop({ label: `direct ${latencyMs} ms`, origin: this.bench.sandbox.origin, target: 'direct', source, connections, durationS });
    const directCpu = perMessage(CpuMeter.between(directStart, await this.meter.snapshot()), direct.requests);
    await this.settle(`direct ${latencyMs} ms`);
    const { result: service, cpu, writes } = await this.measure(
      () => closedLoop({ label: `service ${latencyMs} ms`, origin: this.service.apiUrl, target: 'service', source, connections, durationS }),
      `service ${latencyMs} ms`,
    );
    return { latencyMs, direct: strip(direct), service: strip(service), ratio: service.okPerS / direct.okPerS, cpu, directCpu, writes };
  }

  /**
   * End to end minus the sandbox latency, paced at overheadLoadFraction of `maxPerS`, or with
   * `maxPerS` 'one at a time': a request every 100 ms, each alone on the service (the idle case).
   */
  async overhead(source: MessageSource, latencyMs: number, maxPerS: number | 'one at a time'): Promise<OverheadResult & { samples: Float64Array }> {
    await this.bench.sandbox.setLatency(latencyMs);
    const { rows: ids } = await this.bench.sql.query<{ max: string | null }>('SELECT max(id) AS max FROM user_sms_send');
    const firstId = Number(ids[0]?.max ?? 0);
    const oneAtATime = maxPerS === 'one at a time';
    const ratePerS = oneAtATime ? 10 : Math.max(1, Math.round(maxPerS * this.options.overheadLoadFraction));
    const label = oneAtATime ? `one at a time ${latencyMs} ms` : `paced ${latencyMs} ms`;
    const answers: ClientAnswer[] = [];
    const load = () =>
      paced({
        label,
        origin: this.service.apiUrl,
        source,
        ratePerS,
        durationS: this.options.durationS,
        maxInFlight: oneAtATime ? 1 : this.options.connections,
        onAnswer: oneAtATime ? collectAnswers(answers) : undefined,
      });
    const { result, cpu } = await this.measure(() => (oneAtATime ? this.recordingSendPhases(load) : load()), label);
    const overhead = summarise(Array.from(result.samples, (v) => v - latencyMs));
    const breakdown = await this.breakdown(firstId, latencyMs);
    const phases = oneAtATime ? await sendPhaseBreakdown(this.service.phasesDir, answers) : undefined;
    return { latencyMs, oneAtATime, run: strip(result), overhead, breakdown, phases, cpu, samples: result.samples };
  }

  /** `run` with the API and the workers recording each send's phases (phase-breakdown.ts). */
  recordingSendPhases<T>(run: () => Promise<T>): Promise<T> {
    return recordSendPhases(this.service.phasesDir, [this.service.api.pid, ...this.service.workers.map((w) => w.pid)], run);
  }

  /**
   * Where the time of the successful sends since `firstId` went, from the rows' own timestamps: p50,
   * p90, p99 of insert → the worker's claim, and of claim → outcome recorded less the sandbox latency.
   */
  /** Where the successful sends with ids in (firstId, lastId] spent their time; no lastId: every one since firstId. */
  async breakdown(firstId: number, latencyMs: number, lastId = Number.MAX_SAFE_INTEGER): Promise<LatencyBreakdown> {
    const { rows } = await this.bench.sql.query<{ to_claim: number[] | null; to_recorded: number[] | null }>(
      `SELECT percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM claimed_at - (created_at AT TIME ZONE current_setting('TimeZone'))) * 1000) AS to_claim,
              percentile_cont(ARRAY[0.5, 0.9, 0.99]) WITHIN GROUP (ORDER BY extract(epoch FROM updated_at - claimed_at) * 1000 - $2) AS to_recorded
         FROM user_sms_send WHERE id > $1 AND id <= $3 AND status = 'success'`,
      [firstId, latencyMs, lastId],
    );
    const round = (values: number[] | null | undefined) => (values ?? []).map((v) => Math.round(v * 10) / 10);
    return { insertToClaim: round(rows[0]?.to_claim), claimToRecordedMinusSandbox: round(rows[0]?.to_recorded) };
  }

  async soak(source: MessageSource, latencyMs: number, seconds: number): Promise<NonNullable<MemoryResult['soak']>> {
    await this.bench.sandbox.setLatency(latencyMs);
    const recorder = rssRecorder(serviceProcesses(this.service));
    // Both samples are taken under load, the same way, so that they compare: 10 s in, and at the end.
    const sampleAt = (ms: number) => new Promise<MemorySample>((resolve) => setTimeout(() => resolve(this.memory()), ms));
    const [run, at10s, atEnd] = await Promise.all([
      closedLoop({ label: `soak ${seconds} s`, origin: this.service.apiUrl, target: 'service', source, connections: this.options.connections, durationS: seconds }),
      sampleAt(10_000),
      sampleAt(seconds * 1000 - 500),
    ]);
    const samples = recorder.stop();
    await this.settle(`soak ${seconds} s`, 120_000);
    return { seconds, latencyMs, run: strip(run), at10s, atEnd, samples };
  }

  /** One enterprise's backlog over the shortened window, with another enterprise's messages in between. */
  async rateLimit(limitedEnterprise: string, otherPrefix: string): Promise<RateLimitResult> {
    const { backlog, rateLimit: limit, rateWindowMs: windowMs, rateMarginMs: marginMs, rateLatencyMs: latencyMs } = this.options;
    await this.bench.sandbox.setLatency(latencyMs);
    const { rows } = await this.bench.sql.query<{ max: string | null }>('SELECT max(id) AS max FROM user_sms_send');
    const firstId = Number(rows[0]?.max ?? 0);
    const limiterKey = `${this.service.prefix}:rate:${limitedEnterprise}`;
    // Grant times as the limiter recorded them (Redis clock, ms), by message id: members are
    // `${messageId}:${uuid}` and stay in the set for a whole window, so polling every tenth of one sees all.
    const grants = new Map<number, number>();
    const pollGrants = async () => {
      const flat = await this.bench.redis.zrange(limiterKey, '0', '-1', 'WITHSCORES');
      for (let i = 0; i + 1 < flat.length; i += 2) grants.set(Number(flat[i]!.split(':')[0]), Number(flat[i + 1]));
    };

    // The backlog is queued at once (?wait=false answers 202 with the message id).
    const started = Date.now();
    const accepted = await Promise.all(
      Array.from({ length: backlog }, (_, i) =>
        sendOne(this.service.apiUrl, { enterprise_number: limitedEnterprise, phone: `+37529${2_000_000 + i}`, text: `Backlog ${i}` }, '?wait=false'),
      ),
    );
    const refused = accepted.filter((a) => a.status !== 202 && a.status !== 200);
    if (refused.length > 0) throw new Error(`backlog: ${refused.length} of ${backlog} messages were refused: ${JSON.stringify(refused[0]?.body)}`);

    const probes: Array<{ atMs: number; latencyMs: number; status: number }> = [];
    const drainDeadline = started + (Math.ceil(backlog / limit) + 2) * (windowMs + marginMs) + 30_000;
    for (let k = 0; ; k += 1) {
      await pollGrants();
      const { rows: left } = await this.bench.sql.query<{ n: string }>(
        "SELECT count(*) AS n FROM user_sms_send WHERE enterprise_number = $1 AND status IN ('pending', 'queued', 'sending')",
        [limitedEnterprise],
      );
      if (Number(left[0]?.n ?? 0) === 0 || Date.now() > drainDeadline) break;
      const probe = await sendOne(this.service.apiUrl, { enterprise_number: `${otherPrefix}${k}`, phone: `+37529${3_000_000 + k}`, text: `Other enterprise ${k}` });
      probes.push({ atMs: Date.now() - started, latencyMs: probe.latencyMs, status: probe.status });
      await new Promise((r) => setTimeout(r, Math.max(0, windowMs / 10 - probe.latencyMs)));
    }
    await pollGrants();
    await this.settle('rate limit');

    const { rows: sent } = await this.bench.sql.query<{ id: string; provider_ref: string }>(
      'SELECT id, provider_ref FROM user_sms_send WHERE enterprise_number = $1 AND id > $2 AND provider_ref IS NOT NULL',
      [limitedEnterprise, firstId],
    );
    const times: number[] = [];
    const grantToArrival: number[] = [];
    for (const row of sent) {
      const arrivals = this.ledger.timesOf(row.provider_ref) ?? [];
      times.push(...arrivals);
      const grantedAt = grants.get(Number(row.id));
      if (grantedAt !== undefined && arrivals.length === 1) grantToArrival.push(arrivals[0]! - grantedAt);
    }
    times.sort((a, b) => a - b);
    const first = times[0] ?? started;
    const last = times[times.length - 1] ?? started;
    const spanMs = last - first;
    const achievedPerS = times.length > limit && spanMs > 0 ? ((times.length - limit) / spanMs) * 1000 : Number.NaN;
    const allowedPerS = (limit / windowMs) * 1000;
    let closestWindowMs = Number.POSITIVE_INFINITY;
    for (let i = 0; i + limit < times.length; i += 1) closestWindowMs = Math.min(closestWindowMs, times[i + limit]! - times[i]!);
    const statuses: Record<string, number> = {};
    for (const p of probes) statuses[p.status] = (statuses[p.status] ?? 0) + 1;
    return {
      backlog,
      workers: this.service.workers.length,
      limit,
      windowMs,
      marginMs,
      latencyMs,
      sendOffsetsMs: times.map((t) => t - first),
      sent: times.length,
      drainMs: last - started,
      achievedPerS,
      allowedPerS,
      fractionOfAllowed: achievedPerS / allowedPerS,
      fractionOfEffective: achievedPerS / ((limit / (windowMs + marginMs)) * 1000),
      windowsOverLimit: windowViolations(times, limit, windowMs),
      grantWindowsOverLimit: windowViolations([...grants.values()], limit, windowMs + marginMs),
      grants: grants.size,
      closestWindowMs: Number.isFinite(closestWindowMs) ? closestWindowMs : null,
      grantToArrivalMs: summarise(grantToArrival),
      otherEnterprise: {
        probes: probes.length,
        latencyMs: summarise(probes.map((p) => p.latencyMs)),
        statuses,
        samples: probes.map((p) => ({ atMs: p.atMs, latencyMs: Math.round(p.latencyMs * 10) / 10 })),
      },
    };
  }

  /**
   * Long lines (issue 8): `enterprises` enterprises accept `perEnterprise` messages each at once, and
   * the stack's workers drain them while other enterprises send one message each. Measures the order
   * WebSMS received each line in, job runs per message, the 202's expected times against WebSMS's
   * arrival times, windows over the limit, the drain rate, the other enterprises' latency and CPU.
   */
  async lines(linePrefix: string, enterprises: number, perEnterprise: number, probePrefix: string, probeEnterprises: number): Promise<LinesResult> {
    const { rateLimit: limit, linesWindowMs: windowMs, linesMarginMs: marginMs, rateLatencyMs: latencyMs } = this.options;
    await this.bench.sandbox.setLatency(latencyMs);
    const cpuStart = await this.meter.snapshot();
    const messagesBefore = await messageCount(this.bench);
    const started = Date.now();
    // One stream per enterprise, so each line's ids follow its acceptance order, as a CRM's would.
    const accepted = (
      await Promise.all(
        Array.from({ length: enterprises }, async (_, e) => {
          const mine: Array<{ id: number; expectedAt: number }> = [];
          for (let i = 0; i < perEnterprise; i += 1) {
            const answer = await sendOne(this.service.apiUrl, { enterprise_number: `${linePrefix}${e}`, phone: `+37529${String(4_000_000 + e * 10_000 + i)}`, text: `Line ${e} #${i}` }, '?wait=false');
            // 200: already sent by the time the answer was written (the head of an idle line); no expected time.
            if (answer.status !== 202 && answer.status !== 200) throw new Error(`lines: message ${i} of ${linePrefix}${e} answered ${answer.status}: ${JSON.stringify(answer.body)}`);
            mine.push({ id: Number(answer.body.id), expectedAt: answer.status === 202 ? Date.parse(String(answer.body.expected_send_at)) : Number.NaN });
          }
          return mine;
        }),
      )
    ).flat();
    const acceptMs = Date.now() - started;

    const probes: Array<{ latencyMs: number; status: number }> = [];
    const deadline = started + (Math.ceil(perEnterprise / limit) + 5) * (windowMs + marginMs + latencyMs) + 60_000;
    for (let k = 0; ; k += 1) {
      const { rows: left } = await this.bench.sql.query<{ n: string }>(
        "SELECT count(*) AS n FROM user_sms_send WHERE enterprise_number LIKE $1 AND status IN ('pending', 'queued', 'sending')",
        [`${linePrefix}%`],
      );
      if (Number(left[0]?.n ?? 0) === 0 || Date.now() > deadline) break;
      const probe = await sendOne(this.service.apiUrl, { enterprise_number: `${probePrefix}${k % probeEnterprises}`, phone: `+37529${5_000_000 + k}`, text: `Other enterprise ${k}` });
      probes.push({ latencyMs: probe.latencyMs, status: probe.status });
      await new Promise((r) => setTimeout(r, Math.max(0, 100 - probe.latencyMs)));
    }
    await this.settle('lines', 120_000);
    const cpu = perMessage(CpuMeter.between(cpuStart, await this.meter.snapshot()), (await messageCount(this.bench)) - messagesBefore);

    const ids = accepted.map((a) => a.id);
    const { rows } = await this.bench.sql.query<{ id: string; enterprise_number: string; provider_ref: string | null }>(
      'SELECT id, enterprise_number, provider_ref FROM user_sms_send WHERE id = ANY($1::bigint[])',
      [ids],
    );
    const pipeline = this.bench.redis.pipeline();
    for (const id of ids) pipeline.hget(`${this.service.prefix}:user-sms-send:m${id}`, 'ats');
    const runs = ((await pipeline.exec()) ?? []).map(([, value]) => Number(value ?? 0));
    const expectedById = new Map(accepted.map((a) => [a.id, a.expectedAt]));
    const byEnterprise = new Map<string, Array<{ id: number; at: number }>>();
    const errors: number[] = [];
    const signed: number[] = [];
    for (const row of rows) {
      const arrivals = (row.provider_ref && this.ledger.timesOf(row.provider_ref)) || [];
      const list = byEnterprise.get(row.enterprise_number) ?? [];
      for (const at of arrivals) list.push({ id: Number(row.id), at });
      byEnterprise.set(row.enterprise_number, list);
      const expectedAt = expectedById.get(Number(row.id));
      if (arrivals.length === 1 && expectedAt !== undefined && !Number.isNaN(expectedAt)) {
        errors.push(Math.abs(arrivals[0]! - expectedAt));
        signed.push(expectedAt - arrivals[0]!);
      }
    }
    let outOfOrderPairs = 0;
    let windowsOverLimit = 0;
    let drainMs = 0;
    for (const list of byEnterprise.values()) {
      list.sort((a, b) => a.at - b.at);
      for (let i = 0; i < list.length; i += 1) for (let j = i + 1; j < list.length; j += 1) if (list[i]!.id > list[j]!.id) outOfOrderPairs += 1;
      windowsOverLimit += windowViolations(list.map((a) => a.at), limit, windowMs);
      if (list.length > 1) drainMs = Math.max(drainMs, list.at(-1)!.at - list[0]!.at);
    }
    const statuses: Record<string, number> = {};
    for (const p of probes) statuses[p.status] = (statuses[p.status] ?? 0) + 1;
    return {
      enterprises,
      perEnterprise,
      workers: this.service.workers.length,
      limit,
      windowMs,
      marginMs,
      latencyMs,
      acceptMs,
      runsPerMessage: { mean: runs.reduce((a, b) => a + b, 0) / Math.max(1, runs.length), max: Math.max(0, ...runs) },
      outOfOrderPairs,
      etaErrorMs: summarise(errors),
      etaSignedErrorMs: summarise(signed),
      windowsOverLimit,
      drainMs,
      allowedDrainMs: (Math.ceil(perEnterprise / limit) - 1) * (windowMs + marginMs),
      otherEnterprise: { probes: probes.length, latencyMs: summarise(probes.map((p) => p.latencyMs)), statuses },
      cpu,
    };
  }

  /**
   * Limiter keys and process memory with many enterprises. A baseline run (half as many messages
   * over fewer enterprises) first brings heaps to their working size, so that the RSS difference of the
   * second run (one message for each of `enterprises` distinct enterprises) is what distinct
   * enterprises cost, not warm-up.
   */
  async scale(prefix: string, enterprises: number, baselinePrefix: string, baselineEnterprises: number): Promise<ScaleResult> {
    const { rateWindowMs, rateMarginMs, rateLatencyMs, connections } = this.options;
    await this.bench.sandbox.setLatency(rateLatencyMs);
    const start = await this.memory();
    const baselineMessages = Math.ceil(enterprises / 2);
    await closedLoop({ label: 'scale baseline', origin: this.service.apiUrl, target: 'service', source: roundRobinSource(baselinePrefix, baselineEnterprises), connections, amount: baselineMessages });
    await this.settle('scale baseline');
    const before = await this.memory();
    const run = await closedLoop({ label: `scale ${enterprises}`, origin: this.service.apiUrl, target: 'service', source: roundRobinSource(prefix, enterprises), connections, amount: enterprises });
    const rateKeys = (await countKeys(this.bench.redis, `${this.service.prefix}:rate:*`)).keys;
    let bytesPerRateKey: number | null = null;
    if (rateKeys.length > 0) {
      const sample = rateKeys.slice(0, 200);
      const sizes = await Promise.all(sample.map((key) => this.bench.redis.memory('USAGE', key)));
      const known = sizes.filter((size): size is number => typeof size === 'number');
      bytesPerRateKey = known.length ? Math.round(known.reduce((a, b) => a + b, 0) / known.length) : null;
    }
    await this.settle(`scale ${enterprises}`);
    const after = await this.memory();
    // Every grant stops counting after window + margin, and its key expires with it.
    const waitedMs = rateWindowMs + rateMarginMs + 1_000;
    await new Promise((r) => setTimeout(r, waitedMs));
    const rateKeysAfterWindow = (await countKeys(this.bench.redis, `${this.service.prefix}:rate:*`)).keys.length;
    const queueKeysAfterWindow = (await countKeys(this.bench.redis, `${this.service.prefix}*`)).keys.length;
    return {
      enterprises,
      baselineEnterprises,
      run: strip(run),
      rateKeysAfterLoad: rateKeys.length,
      bytesPerRateKey,
      rateKeysAfterWindow,
      waitedMs,
      queueKeysAfterWindow,
      start,
      before,
      after,
    };
  }
}

export function perMessage(cpu: CpuByGroup, messages: number): CpuPerMessage {
  const byGroup = {} as Record<Group, number | null>;
  for (const group of GROUPS) {
    const seconds = cpu[group];
    byGroup[group] = seconds === null || messages === 0 ? null : (seconds * 1000) / messages;
  }
  const sum = (groups: Group[]) => groups.reduce((total, g) => total + (byGroup[g] ?? 0), 0);
  return { byGroup, serviceTotal: sum(['api', 'workers', 'background', 'postgres', 'redis']), machineTotal: sum(GROUPS), messages };
}

/** Starts a stack with its enterprises seeded; the caller stops it. */
export async function startStack(
  bench: Bench,
  name: string,
  workers: number,
  env: Record<string, string>,
  options: BenchOptions,
  ledger: SendLedger,
  redisPid: number | undefined,
  standIns: readonly number[] = [],
): Promise<StackRunner> {
  const service = await startService(bench, name, workers, env, options.logLevel);
  return new StackRunner(bench, service, ledger, options, redisPid, standIns);
}
