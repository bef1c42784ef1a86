// A strict reader of the Prometheus text exposition format (0.0.4), for tests: it throws on anything
// a Prometheus server would reject or misread, and returns the samples for assertions.

export interface ParsedSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface ParsedFamily {
  name: string;
  type: string;
  help: string;
  samples: ParsedSample[];
}

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const LABEL = `([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\\\\n]|\\\\[\\\\"n])*)"`;
const SAMPLE = new RegExp(`^(${NAME})(?:\\{((?:${LABEL})(?:,${LABEL})*,?)?\\})? (\\S+)(?: (-?\\d+))?$`);
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export function parsePrometheusText(text: string): Map<string, ParsedFamily> {
  if (text !== '' && !text.endsWith('\n')) throw new Error('exposition must end with a newline');
  const families = new Map<string, ParsedFamily>();
  const familyOf = (sampleName: string): ParsedFamily | undefined => {
    const direct = families.get(sampleName);
    if (direct) return direct;
    const match = /^(.*)_(bucket|sum|count|created)$/.exec(sampleName);
    const base = match ? families.get(match[1]!) : undefined;
    return base && ['histogram', 'summary'].includes(base.type) ? base : undefined;
  };
  const lines = text.split('\n').slice(0, -1);
  for (const [index, line] of lines.entries()) {
    const where = `line ${index + 1}: ${line}`;
    if (line.startsWith('# HELP ')) {
      const [, name, help] = /^# HELP (\S+) ?(.*)$/.exec(line) ?? [];
      if (!name || !new RegExp(`^${NAME}$`).test(name)) throw new Error(`bad HELP, ${where}`);
      const family = families.get(name);
      if (family?.help) throw new Error(`second HELP for ${name}, ${where}`);
      families.set(name, { name, type: family?.type ?? 'untyped', help: help ?? '', samples: family?.samples ?? [] });
    } else if (line.startsWith('# TYPE ')) {
      const [, name, type] = /^# TYPE (\S+) (\S+)$/.exec(line) ?? [];
      if (!name || !type || !TYPES.has(type)) throw new Error(`bad TYPE, ${where}`);
      const family = families.get(name);
      if (family && (family.samples.length > 0 || family.type !== 'untyped')) throw new Error(`TYPE after samples or twice for ${name}, ${where}`);
      families.set(name, { name, type, help: family?.help ?? '', samples: [] });
    } else if (line.startsWith('#') || line.trim() === '') {
      continue;
    } else {
      const match = SAMPLE.exec(line);
      if (!match) throw new Error(`malformed sample, ${where}`);
      const name = match[1]!;
      const labels: Record<string, string> = {};
      for (const [, label, value] of (match[2] ?? '').matchAll(new RegExp(LABEL, 'g'))) {
        if (label! in labels) throw new Error(`label ${label} twice, ${where}`);
        labels[label!] = value!.replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
      }
      const value = parseValue(match[match.length - 2]!);
      if (value === undefined) throw new Error(`bad value, ${where}`);
      const family = familyOf(name);
      if (!family) throw new Error(`sample without a TYPE for its family, ${where}`);
      family.samples.push({ name, labels, value });
    }
  }
  for (const family of families.values()) if (family.type === 'histogram') checkHistogram(family);
  return families;
}

/** As Prometheus reads values (Go's ParseFloat): NaN and Inf in any letter case. */
function parseValue(raw: string): number | undefined {
  if (/^nan$/i.test(raw)) return NaN;
  const infinity = /^([+-]?)inf(inity)?$/i.exec(raw);
  if (infinity) return infinity[1] === '-' ? -Infinity : Infinity;
  if (!/^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(raw)) return undefined;
  return Number(raw);
}

/** Buckets cumulative and ordered, ending with +Inf equal to _count, for every label set. */
function checkHistogram(family: ParsedFamily): void {
  const series = new Map<string, { buckets: Array<[number, number]>; count?: number; sum?: number }>();
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    const entry = series.get(key) ?? { buckets: [] };
    series.set(key, entry);
    if (sample.name === `${family.name}_bucket`) {
      if (le === undefined) throw new Error(`${family.name}: bucket without le`);
      entry.buckets.push([le === '+Inf' ? Infinity : Number(le), sample.value]);
    } else if (sample.name === `${family.name}_count`) entry.count = sample.value;
    else if (sample.name === `${family.name}_sum`) entry.sum = sample.value;
  }
  for (const [key, entry] of series) {
    const les = entry.buckets.map(([le]) => le);
    if (les.some((le, i) => i > 0 && le <= les[i - 1]!)) throw new Error(`${family.name} ${key}: buckets not in increasing le order`);
    if (entry.buckets.some(([, count], i) => i > 0 && count < entry.buckets[i - 1]![1])) throw new Error(`${family.name} ${key}: buckets not cumulative`);
    const last = entry.buckets.at(-1);
    if (!last || last[0] !== Infinity) throw new Error(`${family.name} ${key}: no +Inf bucket`);
    if (entry.count !== last[1]) throw new Error(`${family.name} ${key}: _count ${entry.count} differs from the +Inf bucket ${last[1]}`);
    if (entry.sum === undefined) throw new Error(`${family.name} ${key}: no _sum`);
  }
}

/** The value of the one sample with exactly these labels (among others), or undefined. */
export function sampleValue(families: Map<string, ParsedFamily>, sampleName: string, labels: Record<string, string> = {}): number | undefined {
  for (const family of families.values()) {
    for (const sample of family.samples) {
      if (sample.name === sampleName && Object.entries(labels).every(([k, v]) => sample.labels[k] === v)) return sample.value;
    }
  }
  return undefined;
}
