import type { LatencySummary } from './load.ts';

// One SVG, no dependencies: (1) latency percentiles of every run, log scale; (2) the rate-limited
// enterprise's sends as WebSMS received them against the most the limit allows; (3) the latency of
// the other enterprise's messages sent during that backlog.

export interface LatencySeries {
  label: string;
  latency: LatencySummary;
  dashed?: boolean;
}

export interface RateSeries {
  limit: number;
  windowMs: number;
  marginMs: number;
  sendOffsetsMs: number[];
  probes: Array<{ atMs: number; latencyMs: number }>;
  probeBudgetMs: number;
}

const WIDTH = 960;
const PANEL_HEIGHT = 330;
const MARGIN = { left: 70, right: 230, top: 40, bottom: 50 };
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#e377c2', '#17becf', '#7f7f7f', '#bcbd22'];
const PERCENTILES: Array<[keyof LatencySummary, string]> = [
  ['p50', 'p50'],
  ['p75', 'p75'],
  ['p90', 'p90'],
  ['p95', 'p95'],
  ['p99', 'p99'],
  ['p999', 'p99.9'],
  ['max', 'max'],
];

const esc = (text: string) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
const fmt = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

function text(x: number, y: number, content: string, attrs = ''): string {
  return `<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" ${attrs}>${esc(content)}</text>`;
}

function panelFrame(top: number, title: string, xLabel: string, yLabel: string): string[] {
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  return [
    text(MARGIN.left, top + 24, title, 'font-size="15" font-weight="bold"'),
    `<rect x="${MARGIN.left}" y="${top + MARGIN.top}" width="${plotW}" height="${plotH}" fill="none" stroke="#999"/>`,
    text(MARGIN.left + plotW / 2, top + PANEL_HEIGHT - 10, xLabel, 'text-anchor="middle" font-size="12"'),
    text(16, top + MARGIN.top + plotH / 2, yLabel, `text-anchor="middle" font-size="12" transform="rotate(-90 16 ${top + MARGIN.top + plotH / 2})"`),
  ];
}

function latencyPanel(top: number, series: LatencySeries[]): string[] {
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  const out = panelFrame(top, 'POST /send latency percentiles (closed loop: max throughput; paced: share of max)', 'percentile', 'latency, ms (log scale)');
  const values = series.flatMap((s) => PERCENTILES.map(([key]) => s.latency[key])).filter((v) => Number.isFinite(v) && v > 0);
  if (values.length === 0) return out;
  const lo = Math.pow(10, Math.floor(Math.log10(Math.min(...values))));
  const hi = Math.pow(10, Math.ceil(Math.log10(Math.max(...values))));
  const y = (v: number) => top + MARGIN.top + plotH - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotH;
  const x = (i: number) => MARGIN.left + (i / (PERCENTILES.length - 1)) * plotW;
  for (let decade = lo; decade <= hi; decade *= 10) {
    for (const m of [1, 2, 5]) {
      const v = decade * m;
      if (v > hi) break;
      out.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${y(v).toFixed(1)}" y2="${y(v).toFixed(1)}" stroke="#eee"/>`);
      out.push(text(MARGIN.left - 6, y(v) + 4, fmt(v), 'text-anchor="end" font-size="11"'));
    }
  }
  PERCENTILES.forEach(([, label], i) => out.push(text(x(i), top + MARGIN.top + plotH + 16, label, 'text-anchor="middle" font-size="11"')));
  series.forEach((s, index) => {
    const color = COLORS[index % COLORS.length]!;
    const points = PERCENTILES.map(([key], i) => `${x(i).toFixed(1)},${y(s.latency[key]).toFixed(1)}`).join(' ');
    out.push(`<polyline points="${points}" fill="none" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    const ly = top + MARGIN.top + 6 + index * 18;
    out.push(`<line x1="${WIDTH - MARGIN.right + 12}" x2="${WIDTH - MARGIN.right + 36}" y1="${ly}" y2="${ly}" stroke="${color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    out.push(text(WIDTH - MARGIN.right + 42, ly + 4, `${s.label} (p50 ${fmt(s.latency.p50)})`, 'font-size="11"'));
  });
  return out;
}

function ratePanel(top: number, rate: RateSeries): string[] {
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  const out = panelFrame(
    top,
    `Rate-limited enterprise: sends as WebSMS received them vs the limit (${rate.limit} per ${rate.windowMs / 1000} s)`,
    'seconds since the first send',
    'cumulative sends',
  );
  const n = rate.sendOffsetsMs.length;
  const spanMs = Math.max(rate.windowMs, ...rate.sendOffsetsMs) + rate.windowMs / 2;
  const maxY = Math.max(n, rate.limit) + rate.limit;
  const x = (ms: number) => MARGIN.left + (ms / spanMs) * plotW;
  const y = (count: number) => top + MARGIN.top + plotH - (count / maxY) * plotH;
  for (let s = 0; s * 1000 <= spanMs; s += Math.max(1, Math.round(spanMs / 1000 / 12))) {
    out.push(`<line x1="${x(s * 1000).toFixed(1)}" x2="${x(s * 1000).toFixed(1)}" y1="${top + MARGIN.top}" y2="${top + MARGIN.top + plotH}" stroke="#eee"/>`);
    out.push(text(x(s * 1000), top + MARGIN.top + plotH + 16, String(s), 'text-anchor="middle" font-size="11"'));
  }
  for (let c = 0; c <= maxY; c += Math.max(1, Math.round(maxY / 8))) out.push(text(MARGIN.left - 6, y(c) + 4, String(c), 'text-anchor="end" font-size="11"'));

  // The most the limit allows from the first send on: `limit` more at every window boundary.
  const envelope: string[] = [];
  for (let k = 0; k * rate.windowMs <= spanMs; k += 1) {
    const t = k * rate.windowMs;
    envelope.push(`${x(t).toFixed(1)},${y(k * rate.limit).toFixed(1)}`, `${x(t).toFixed(1)},${y(Math.min(maxY, (k + 1) * rate.limit)).toFixed(1)}`);
    envelope.push(`${x(Math.min(spanMs, (k + 1) * rate.windowMs)).toFixed(1)},${y(Math.min(maxY, (k + 1) * rate.limit)).toFixed(1)}`);
  }
  out.push(`<polyline points="${envelope.join(' ')}" fill="none" stroke="#d62728" stroke-width="1.5" stroke-dasharray="5 4"/>`);
  const steps: string[] = [`${x(0).toFixed(1)},${y(0).toFixed(1)}`];
  rate.sendOffsetsMs.forEach((t, i) => steps.push(`${x(t).toFixed(1)},${y(i).toFixed(1)}`, `${x(t).toFixed(1)},${y(i + 1).toFixed(1)}`));
  steps.push(`${x(spanMs).toFixed(1)},${y(n).toFixed(1)}`);
  out.push(`<polyline points="${steps.join(' ')}" fill="none" stroke="#1f77b4" stroke-width="2"/>`);
  for (const [i, t] of rate.sendOffsetsMs.entries()) out.push(`<circle cx="${x(t).toFixed(1)}" cy="${y(i + 1).toFixed(1)}" r="2.5" fill="#1f77b4"/>`);
  const lx = WIDTH - MARGIN.right + 12;
  out.push(`<line x1="${lx}" x2="${lx + 24}" y1="${top + 50}" y2="${top + 50}" stroke="#1f77b4" stroke-width="2"/>`, text(lx + 30, top + 54, `sends (${n})`, 'font-size="11"'));
  out.push(
    `<line x1="${lx}" x2="${lx + 24}" y1="${top + 70}" y2="${top + 70}" stroke="#d62728" stroke-width="1.5" stroke-dasharray="5 4"/>`,
    text(lx + 30, top + 74, 'most the limit allows', 'font-size="11"'),
  );
  return out;
}

function probePanel(top: number, rate: RateSeries): string[] {
  const plotW = WIDTH - MARGIN.left - MARGIN.right;
  const plotH = PANEL_HEIGHT - MARGIN.top - MARGIN.bottom;
  const out = panelFrame(top, "Another enterprise's single message during the backlog: POST /send latency", 'seconds since the backlog was queued', 'latency, ms');
  if (rate.probes.length === 0) return out;
  const spanMs = Math.max(...rate.probes.map((p) => p.atMs)) + 500;
  const maxY = Math.max(rate.probeBudgetMs * 1.2, ...rate.probes.map((p) => p.latencyMs));
  const x = (ms: number) => MARGIN.left + (ms / spanMs) * plotW;
  const y = (v: number) => top + MARGIN.top + plotH - (v / maxY) * plotH;
  for (let c = 0; c <= maxY; c += Math.max(10, Math.round(maxY / 60) * 10)) out.push(text(MARGIN.left - 6, y(c) + 4, String(c), 'text-anchor="end" font-size="11"'));
  for (let s = 0; s * 1000 <= spanMs; s += Math.max(1, Math.round(spanMs / 1000 / 12))) out.push(text(x(s * 1000), top + MARGIN.top + plotH + 16, String(s), 'text-anchor="middle" font-size="11"'));
  out.push(`<line x1="${MARGIN.left}" x2="${MARGIN.left + plotW}" y1="${y(rate.probeBudgetMs).toFixed(1)}" y2="${y(rate.probeBudgetMs).toFixed(1)}" stroke="#d62728" stroke-dasharray="5 4"/>`);
  for (const p of rate.probes) out.push(`<circle cx="${x(p.atMs).toFixed(1)}" cy="${y(p.latencyMs).toFixed(1)}" r="2.5" fill="#2ca02c"/>`);
  const lx = WIDTH - MARGIN.right + 12;
  out.push(`<circle cx="${lx + 12}" cy="${top + 50}" r="3" fill="#2ca02c"/>`, text(lx + 30, top + 54, `messages (${rate.probes.length})`, 'font-size="11"'));
  out.push(
    `<line x1="${lx}" x2="${lx + 24}" y1="${top + 70}" y2="${top + 70}" stroke="#d62728" stroke-dasharray="5 4"/>`,
    text(lx + 30, top + 74, `target ${rate.probeBudgetMs} ms`, 'font-size="11"'),
  );
  return out;
}

export function renderChart(title: string, latency: LatencySeries[], rate: RateSeries | undefined): string {
  const panels: string[][] = [];
  let top = 30;
  if (latency.length > 0) {
    panels.push(latencyPanel(top, latency));
    top += PANEL_HEIGHT;
  }
  if (rate) {
    panels.push(ratePanel(top, rate));
    top += PANEL_HEIGHT;
    panels.push(probePanel(top, rate));
    top += PANEL_HEIGHT;
  }
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${top + 10}" viewBox="0 0 ${WIDTH} ${top + 10}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    text(WIDTH / 2, 20, title, 'text-anchor="middle" font-size="13" fill="#444"'),
    ...panels.flat(),
    '</svg>',
    '',
  ].join('\n');
}
