import { describe, expect, it } from 'vitest';
import { formatFamilies, formatValue } from '../../src/metrics/exposition.ts';
import { parsePrometheusText } from '../support/prometheus-text.ts';

describe('Prometheus text exposition', () => {
  it('escapes label values and help texts so that any enterprise number reads back unchanged', () => {
    const awkward = 'a"b\\c\nd';
    const text = formatFamilies([
      { name: 'x_total', help: 'line one\nline two \\ end', type: 'counter', samples: [{ labels: { enterprise: awkward, outcome: 'success' }, value: 2 }] },
    ]);
    expect(text).toBe('# HELP x_total line one\\nline two \\\\ end\n# TYPE x_total counter\nx_total{enterprise="a\\"b\\\\c\\nd",outcome="success"} 2\n');
    const family = parsePrometheusText(text).get('x_total')!;
    expect(family.samples[0]!.labels.enterprise).toBe(awkward);
  });

  it('writes infinities and NaN the way Prometheus reads them', () => {
    expect([Infinity, -Infinity, NaN, 0.25, 3].map(formatValue)).toEqual(['+Inf', '-Inf', 'NaN', '0.25', '3']);
  });

  it('writes a family with no samples yet as its HELP and TYPE only, and nothing at all for no families', () => {
    expect(formatFamilies([{ name: 'y', help: 'h', type: 'gauge', samples: [] }])).toBe('# HELP y h\n# TYPE y gauge\n');
    expect(formatFamilies([])).toBe('');
  });
});
