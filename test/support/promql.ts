// Metric names a PromQL expression reads, for checking rules and dashboards against what the service
// exports. Run on expressions promtool has already parsed (so they are valid PromQL): it removes
// strings, label matchers, ranges, label lists and numbers, and what is left that is not a keyword or
// a function call is a metric name.

const KEYWORDS = new Set(['and', 'or', 'unless', 'bool', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'offset', 'atan2', 'inf', 'nan', 'Inf', 'NaN']);

export function metricNamesIn(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '$1 ')
    .replace(/\boffset\s+-?[0-9a-z]+/g, ' ')
    .replace(/(^|[^a-zA-Z0-9_:])(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?/g, '$1 ');
  const names = new Set<string>();
  // A function call, or an aggregation with its label list first: `sum by (le) (…)`.
  for (const match of stripped.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\(|\s+(?:by|without)\b)?/g)) {
    if (match[2] || KEYWORDS.has(match[1]!)) continue;
    names.add(match[1]!);
  }
  return [...names];
}

/** Every sample name a scrape can carry: family names, and a histogram's _bucket, _sum and _count. */
export function exportedSampleNames(families: ReadonlyMap<string, { type: string }>): Set<string> {
  const names = new Set<string>();
  for (const [name, family] of families) {
    names.add(name);
    if (family.type === 'histogram' || family.type === 'summary') for (const suffix of ['_bucket', '_sum', '_count']) names.add(`${name}${suffix}`);
  }
  return names;
}
