import type { CheckResult } from './checks.ts';
import type { LatencySummary } from './load.ts';
import { describeRoundTrips, GROUPS, type RoundTripCosts } from './measurements.ts';
import type { BenchOptions } from './options.ts';
import type { ProfileShares } from './profile-summary.ts';
import type { CpuPerMessage, DeliveryCostResult, LinesResult, MemoryResult, MemorySample, OverheadResult, RateLimitResult, ScaleResult, ThroughputResult } from './phases.ts';

// The JSON document and the table printed from it. Targets are issue 5's; a missed target is
// reported, a failed check fails the run.

export interface BenchDocument {
  meta: {
    startedAt: string;
    finishedAt: string;
    durationS: number;
    host: {
      cpus: number;
      model: string;
      loadAverage: number[];
      node: string;
      platform: string;
      /** the machine's price of one hop, measured before the load (absent in documents from before it was measured) */
      roundTrip?: RoundTripCosts;
    };
    commit: string | null;
    options: Omit<BenchOptions, 'databaseUrl' | 'redisUrl'>;
    notes: string[];
  };
  throughput: ThroughputResult[];
  overhead: OverheadResult[];
  memory: MemoryResult | null;
  rateLimit: RateLimitResult | null;
  scale: ScaleResult | null;
  /** long lines (issue 8): order, runs per message, expected-time error, limit */
  lines?: LinesResult | null;
  /** delivery look-ups and callbacks (issue 9): their cost to the sends */
  delivery?: DeliveryCostResult | null;
  /** --profile: where each process's busy time went (profile-summary.ts) */
  profiles?: Array<{ name: string; pid: number } & ProfileShares>;
  targets: TargetResult[];
  checks: CheckResult[];
  passed: boolean;
}

export interface TargetResult {
  target: string;
  measured: string;
  met: boolean | null;
}

const num = (v: number | null | undefined, digits = 1) => (v === null || v === undefined || !Number.isFinite(v) ? '—' : v.toFixed(digits));
const pct = (v: number) => (Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : '—');

export function evaluateTargets(doc: Omit<BenchDocument, 'targets' | 'checks' | 'passed'>): TargetResult[] {
  const targets: TargetResult[] = [];
  const at = (ms: number) => doc.throughput.find((t) => t.latencyMs === ms);
  const t100 = at(100);
  if (t100) {
    targets.push({ target: '≥ 400 sends/s at 100 ms sandbox latency', measured: `${num(t100.service.okPerS, 0)}/s`, met: t100.service.okPerS >= 400 });
    targets.push({ target: '≥ 80% of direct-to-sandbox at 100 ms', measured: `${pct(t100.ratio)} (${num(t100.service.okPerS, 0)} of ${num(t100.direct.okPerS, 0)}/s)`, met: t100.ratio >= 0.8 });
  }
  const t0 = at(0);
  if (t0) {
    targets.push({ target: '≥ 800 sends/s at 0 ms', measured: `${num(t0.service.okPerS, 0)}/s`, met: t0.service.okPerS >= 800 });
    // What 800 sends/s on two cores leaves per message.
    const byGroup = t0.cpu.byGroup;
    targets.push({
      target: 'service CPU per message ≤ 2.5 ms at 0 ms',
      measured: `${num(t0.cpu.serviceTotal, 2)} ms (API ${num(byGroup.api ?? 0, 2)}, workers ${num(byGroup.workers ?? 0, 2)}, background ${num(byGroup.background ?? 0, 2)}, PostgreSQL ${num(byGroup.postgres ?? 0, 2)}, Redis ${num(byGroup.redis ?? 0, 2)})`,
      met: t0.cpu.serviceTotal <= 2.5,
    });
  }
  for (const o of doc.overhead) {
    targets.push(
      o.oneAtATime
        ? {
            target: `overhead p50 ≤ 5 ms, one request at a time (${o.latencyMs} ms sandbox)`,
            measured: `p50 ${num(o.overhead.p50)} ms (p99 ${num(o.overhead.p99)} ms)`,
            met: o.overhead.p50 <= 5,
          }
        : {
            target: `overhead p50 ≤ 5 ms, p99 ≤ 25 ms at ~${num(o.run.targetRatePerS, 0)}/s (${o.latencyMs} ms sandbox)`,
            measured: `p50 ${num(o.overhead.p50)} ms, p99 ${num(o.overhead.p99)} ms`,
            met: o.overhead.p50 <= 5 && o.overhead.p99 <= 25,
          },
    );
  }
  if (doc.memory) {
    const peaks: Record<string, number> = {};
    const note = (sample: Record<string, number | null>) => {
      for (const [name, mb] of Object.entries(sample)) if (mb !== null) peaks[name] = Math.max(peaks[name] ?? 0, mb);
    };
    note(doc.memory.afterLoad.rss);
    if (doc.memory.soak) note(doc.memory.soak.atEnd.rss);
    const worst = Math.max(...Object.values(peaks));
    targets.push({ target: 'RSS < 150 MB per process after load', measured: Object.entries(peaks).map(([n, mb]) => `${n} ${num(mb, 0)}`).join(', ') + ' MB', met: worst < 150 });
    const soak = doc.memory.soak;
    if (soak) {
      const growth = delta(soak.at10s.liveHeap, soak.atEnd.liveHeap);
      const rssGrowth = delta(soak.at10s.rss, soak.atEnd.rss);
      const ok = Object.entries(growth).every(([name, g]) => g === null || g <= Math.max(5, 0.1 * (soak.at10s.liveHeap[name] ?? 0)));
      targets.push({
        target: `no memory growth from 10 s to ${soak.seconds} s of load beyond noise (live heap ≤ +5 MB or 10%)`,
        measured: `live heap ${signed(growth)} MB; RSS ${signed(rssGrowth)} MB`,
        met: ok,
      });
    }
  }
  if (doc.rateLimit) {
    const r = doc.rateLimit;
    targets.push({
      target: `rate-limit drain ≥ 95% of ${r.limit}/${r.windowMs / 1000} s over ${r.workers} workers`,
      measured: `${pct(r.fractionOfAllowed)} (${pct(r.fractionOfEffective)} of window+margin)`,
      met: r.fractionOfAllowed >= 0.95,
    });
    targets.push({ target: 'zero rolling windows over the limit', measured: String(r.windowsOverLimit), met: r.windowsOverLimit === 0 });
    const budget = 100 + r.latencyMs;
    targets.push({
      target: `other enterprise answered < ${budget} ms (100 ms + sandbox) during the backlog (p90)`,
      measured: `p50 ${num(r.otherEnterprise.latencyMs.p50)}, p90 ${num(r.otherEnterprise.latencyMs.p90)}, max ${num(r.otherEnterprise.latencyMs.max)} ms over ${r.otherEnterprise.probes}`,
      met: r.otherEnterprise.latencyMs.p90 < budget,
    });
  }
  if (doc.scale) {
    const s = doc.scale;
    targets.push({
      target: `${s.enterprises} enterprises: limiter keys expire`,
      measured: `${s.rateKeysAfterLoad} keys (${num(s.bytesPerRateKey, 0)} B each) → ${s.rateKeysAfterWindow} after ${s.waitedMs} ms`,
      met: s.rateKeysAfterWindow === 0,
    });
    const heap = delta(s.before.liveHeap, s.after.liveHeap);
    const known = Object.values(heap).filter((g): g is number => g !== null);
    const worst = known.length ? Math.max(...known) : Number.NaN;
    targets.push({
      target: `${s.enterprises} enterprises: no per-enterprise state in process memory (live heap growth < 5 MB)`,
      measured: `live heap ${signed(heap)} MB (${worst > 0 ? `≤ ${num((worst * 1048576) / s.enterprises, 0)} B per enterprise` : 'no growth'}); RSS ${signed(delta(s.before.rss, s.after.rss))} MB`,
      met: Number.isFinite(worst) && worst < 5,
    });
  }
  if (doc.delivery) {
    const d = doc.delivery;
    targets.push({
      target: `delivery look-ups and callbacks for every message cost ≤ 20% of send throughput (${d.latencyMs} ms sandbox)`,
      measured:
        `${num(d.withDelivery.okPerS, 0)} of ${num(d.baseline.okPerS, 0)}/s (${pct(d.throughputRatio)}` +
        `${d.rounds.length > 1 ? `, the median of ${d.rounds.map((r) => pct(r.ratio)).join(', ')}` : ''}); ` +
        `service CPU per message ${num(d.cpuBaseline.serviceTotal)} → ${num(d.cpuWithDelivery.serviceTotal)} ms (+${pct(d.cpuWithDelivery.serviceTotal / d.cpuBaseline.serviceTotal - 1)})`,
      met: d.throughputRatio >= 0.8,
    });
    // "Adds nothing": at a steady rate that leaves the machine room for the delivery work's CPU (the
    // first --delivery-loads share, a quarter of the baseline's by default), within the run-to-run
    // noise here: 1 ms or 10% of the baseline. The other shares are reported, not judged: once two
    // cores shared with the WebSMS stand-in and the callback receiver are busy, any added CPU lengthens
    // every hop's wait for a core, whatever waits for what.
    d.paced.forEach((p, i) => {
      const added = p.withDelivery.latency.p50 - p.baseline.latency.p50;
      targets.push({
        target:
          i === 0
            ? `delivery look-ups and callbacks add nothing to send latency at ${num(p.ratePerS, 0)}/s, ${pct(p.loadFraction)} of the baseline (p50 within 1 ms or 10%)`
            : `what delivery look-ups and callbacks add to send latency at ${num(p.ratePerS, 0)}/s, ${pct(p.loadFraction)} of the baseline (shown, not a target)`,
        measured:
          `p50 ${num(p.baseline.latency.p50)} → ${num(p.withDelivery.latency.p50)} ms, p99 ${num(p.baseline.latency.p99)} → ${num(p.withDelivery.latency.p99)} ms` +
          `${p.rounds.length > 1 ? ` (the median round of ${p.rounds.map((r) => `${num(r.baselineP50)} → ${num(r.withDeliveryP50)}`).join(', ')})` : ''}` +
          `${i === 0 ? ` (closed loop: p50 ${num(d.baseline.latency.p50)} → ${num(d.withDelivery.latency.p50)} ms)` : ''}`,
        met: i === 0 ? added <= Math.max(1, 0.1 * p.baseline.latency.p50) : null,
      });
    });
  }
  return targets;
}

function delta(from: Record<string, number | null>, to: Record<string, number | null>): Record<string, number | null> {
  const result: Record<string, number | null> = {};
  for (const name of Object.keys(to)) {
    const a = from[name];
    const b = to[name];
    result[name] = a == null || b == null ? null : Math.round((b - a) * 10) / 10;
  }
  return result;
}

function signed(values: Record<string, number | null>): string {
  return Object.entries(values)
    .map(([name, v]) => `${name} ${v !== null && v >= 0 ? '+' : ''}${num(v)}`)
    .join(', ');
}

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  return [line(headers), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

const lat = (l: LatencySummary) => [num(l.p50), num(l.p90), num(l.p99), num(l.max)];

function cpuRow(label: string, cpu: CpuPerMessage): string[] {
  return [label, ...GROUPS.map((g) => num(cpu.byGroup[g], 3)), num(cpu.serviceTotal, 3), num(cpu.machineTotal, 3), String(cpu.messages)];
}

export function renderTable(doc: BenchDocument): string {
  const out: string[] = [];
  const o = doc.meta.options;
  out.push(`user-sms-dispatcher benchmark — ${doc.meta.startedAt}, ${doc.meta.host.cpus} CPUs, Node ${doc.meta.host.node}, commit ${doc.meta.commit ?? '?'}`);
  if (doc.meta.host.roundTrip) out.push(`one round trip at a time on this machine, before the load: ${describeRoundTrips(doc.meta.host.roundTrip)}`);
  out.push(`${o.connections} clients, ${o.durationS} s per run, ${o.workers} worker processes, ${o.enterprises} enterprises (limit 3 per 60 s, real)\n`);

  if (doc.throughput.length > 0) {
    out.push('Throughput, closed loop (POST /send waits for the WebSMS outcome)');
    const rows: string[][] = [];
    for (const t of doc.throughput) {
      for (const [name, run] of [
        [`direct to sandbox, ${t.latencyMs} ms`, t.direct],
        [`service, ${t.latencyMs} ms`, t.service],
      ] as const) {
        const bad = run.requests - run.ok + run.errors + run.timeouts;
        rows.push([name, num(run.okPerS, 0), ...lat(run.latency), String(bad), name.startsWith('service') ? pct(t.ratio) : '']);
      }
    }
    out.push(table(['run', 'sends/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'not ok', 'of direct'], rows));
    for (const t of doc.throughput) {
      for (const example of t.service.examples.slice(0, 2)) out.push(`  not ok (service, ${t.latencyMs} ms): HTTP ${example.status} ${example.body}`);
    }
    out.push('');
  }
  if (doc.overhead.length > 0) {
    out.push(`Overhead = end-to-end − sandbox latency, one request at a time, then paced at ${o.overheadLoadFraction * 100}% of max throughput (claim→recorded excludes the sandbox latency)`);
    out.push(
      table(
        ['sandbox', 'rate/s', 'achieved', 'e2e p50', 'e2e p99', 'overhead p50', 'overhead p90', 'overhead p99', 'insert→claim p50/p99', 'claim→recorded p50/p99', 'not ok'],
        doc.overhead.map((v) => [
          v.oneAtATime ? `${v.latencyMs} ms, one at a time` : `${v.latencyMs} ms`,
          num(v.run.targetRatePerS, 0),
          num(v.run.okPerS, 0),
          num(v.run.latency.p50),
          num(v.run.latency.p99),
          num(v.overhead.p50),
          num(v.overhead.p90),
          num(v.overhead.p99),
          `${num(v.breakdown.insertToClaim[0])} / ${num(v.breakdown.insertToClaim[2])}`,
          `${num(v.breakdown.claimToRecordedMinusSandbox[0])} / ${num(v.breakdown.claimToRecordedMinusSandbox[2])}`,
          String(v.run.requests - v.run.ok + v.run.errors + v.run.timeouts),
        ]),
      ),
      '',
    );
    for (const v of doc.overhead) {
      if (!v.phases) continue;
      out.push(`One at a time (${v.latencyMs} ms sandbox), hop by hop: ${v.phases.sends} sends, p50 of the whole ${num(v.phases.totalP50)} ms (the steps' p50s need not add up to it)`);
      out.push(table(['step', 'p50 ms', 'p90 ms'], v.phases.steps.map((s) => [s.step, num(s.p50), num(s.p90)])), '');
    }
  }
  if (doc.throughput.length > 0 || doc.overhead.length > 0) {
    out.push('CPU per message, ms (service = api + workers + background + postgres + redis; machine adds sandbox and load generator)');
    const rows = [
      ...doc.throughput.flatMap((t) => [cpuRow(`service, ${t.latencyMs} ms`, t.cpu), cpuRow(`direct, ${t.latencyMs} ms`, t.directCpu)]),
      ...doc.overhead.map((v) => cpuRow(`${v.oneAtATime ? 'one at a time' : 'paced'}, ${v.latencyMs} ms`, v.cpu)),
    ];
    out.push(table(['run', ...GROUPS, 'service', 'machine', 'messages'], rows), '');
  }
  if (doc.memory) {
    const m = doc.memory;
    const names = Object.keys(m.afterLoad.rss);
    const row = (label: string, values: Record<string, number | null>) => [label, ...names.map((n) => num(values[n]))];
    const rows = [row('RSS, idle', m.idle.rss), row('RSS, after load', m.afterLoad.rss)];
    if (m.soak) rows.push(row('RSS, soak at 10 s', m.soak.at10s.rss), row(`RSS, soak at ${m.soak.seconds} s`, m.soak.atEnd.rss));
    rows.push(row('live heap, idle', m.idle.liveHeap), row('live heap, after load', m.afterLoad.liveHeap));
    if (m.soak) rows.push(row('live heap, soak at 10 s', m.soak.at10s.liveHeap), row(`live heap, soak at ${m.soak.seconds} s`, m.soak.atEnd.liveHeap));
    out.push('Memory, MB (live heap: after a full collection)');
    out.push(table(['', ...names], rows));
    if (m.soak) out.push(`soak: ${num(m.soak.run.okPerS, 0)} sends/s for ${m.soak.seconds} s at ${m.soak.latencyMs} ms`);
    out.push('');
  }
  if (doc.rateLimit) {
    const r = doc.rateLimit;
    out.push(`Rate limit: ${r.backlog} messages for one enterprise, ${r.limit} per ${r.windowMs} ms (+${r.marginMs} ms margin), ${r.workers} workers, sandbox ${r.latencyMs} ms`);
    out.push(
      table(
        ['sent', 'drain s', 'achieved/s', 'allowed/s', 'of allowed', 'of window+margin', 'windows over limit', 'closest window ms', 'grant→WebSMS p50/max ms'],
        [
          [
            String(r.sent),
            num(r.drainMs / 1000, 2),
            num(r.achievedPerS, 3),
            num(r.allowedPerS, 3),
            pct(r.fractionOfAllowed),
            pct(r.fractionOfEffective),
            String(r.windowsOverLimit),
            num(r.closestWindowMs, 0),
            `${num(r.grantToArrivalMs.p50)} / ${num(r.grantToArrivalMs.max)}`,
          ],
        ],
      ),
    );
    const p = r.otherEnterprise;
    out.push(`other enterprise during the backlog: ${p.probes} messages, p50 ${num(p.latencyMs.p50)} ms, p90 ${num(p.latencyMs.p90)} ms, max ${num(p.latencyMs.max)} ms, statuses ${JSON.stringify(p.statuses)}`, '');
  }
  if (doc.scale) {
    const s = doc.scale;
    out.push(
      `Scale: ${s.enterprises} distinct enterprises, one message each (${num(s.run.okPerS, 0)} sends/s), after a baseline of half as many messages over ${s.baselineEnterprises} enterprises`,
    );
    out.push(
      table(
        ['limiter keys after load', 'bytes/key', `after ${s.waitedMs} ms`, 'queue keys (per message, kept)'],
        [[String(s.rateKeysAfterLoad), num(s.bytesPerRateKey, 0), String(s.rateKeysAfterWindow), String(s.queueKeysAfterWindow)]],
      ),
    );
    const names = Object.keys(s.after.rss);
    const row = (label: string, pick: (m: MemorySample) => Record<string, number | null>) => [label, ...names.map((n) => `${num(pick(s.start)[n], 0)} → ${num(pick(s.before)[n], 0)} → ${num(pick(s.after)[n], 0)}`)];
    out.push(table(['MB: start → after baseline → after', ...names], [row('RSS', (m) => m.rss), row('live heap', (m) => m.liveHeap)]), '');
  }
  if (doc.delivery) {
    const d = doc.delivery;
    out.push(
      `Delivery look-ups and callbacks: the same closed loop without them and with a look-up and two callbacks per message (${d.latencyMs} ms sandbox), ` +
        `taking turns over ${d.rounds.length} round(s): ${d.rounds.map((r) => `${num(r.baselineOkPerS, 0)} → ${num(r.withDeliveryOkPerS, 0)}/s`).join(', ')}; the median round, then the paced runs' median rounds:`,
    );
    out.push(
      table(
        ['run', 'sends/s', 'p50', 'p90', 'p99', 'max', 'CPU ms/msg (service)'],
        [
          ['without', num(d.baseline.okPerS, 0), ...lat(d.baseline.latency), num(d.cpuBaseline.serviceTotal, 3)],
          ['with', num(d.withDelivery.okPerS, 0), ...lat(d.withDelivery.latency), num(d.cpuWithDelivery.serviceTotal, 3)],
          ...d.paced.flatMap((p) => [
            [`without, paced ${num(p.ratePerS, 0)}/s`, num(p.baseline.okPerS, 0), ...lat(p.baseline.latency), ''],
            [`with, paced ${num(p.ratePerS, 0)}/s`, num(p.withDelivery.okPerS, 0), ...lat(p.withDelivery.latency), ''],
          ]),
        ],
      ),
    );
    out.push(`${d.deliveryFinal} of ${d.messages} final delivery statuses, ${d.callbacksReceived} callbacks delivered; done ${d.drainMs} ms after the load`, '');
    for (const p of d.paced) {
      const { baseline, withDelivery } = p.phases;
      if (!baseline || !withDelivery) continue;
      out.push(`The median round paced at ${num(p.ratePerS, 0)}/s, hop by hop (p50 ms; ${baseline.sends} and ${withDelivery.sends} sends):`);
      const rows = baseline.steps.map((step, i) => [step.step, num(step.p50), num(withDelivery.steps[i]?.p50)]);
      rows.push(['the whole send', num(baseline.totalP50), num(withDelivery.totalP50)]);
      out.push(table(['step', 'without', 'with'], rows), '');
    }
  }
  out.push('Targets');
  out.push(table(['', 'target', 'measured'], doc.targets.map((t) => [t.met === null ? '—' : t.met ? 'met' : 'MISSED', t.target, t.measured])), '');
  out.push('Correctness checks');
  out.push(table(['', 'check', 'detail'], doc.checks.map((c) => [c.passed ? 'PASS' : 'FAIL', c.name, c.detail])));
  out.push('', doc.passed ? 'All checks passed.' : 'CHECKS FAILED.');
  return out.join('\n');
}
