import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportedSampleNames, metricNamesIn } from '../support/promql.ts';
import { scrapeRunningService } from '../support/service-scrape.ts';
import { findTool, skipWithoutTool } from '../support/tools.ts';

// ops/grafana/user-sms.json: an importable dashboard whose every query is valid PromQL (promtool
// parses each one as a recording rule) over metric names a running service really exports.

interface Target {
  expr?: string;
  refId: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  gridPos: { h: number; w: number; x: number; y: number };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  id: null;
  uid: string;
  title: string;
  schemaVersion: number;
  templating: { list: Array<{ name: string; type: string; query: unknown; definition?: string }> };
  panels: Panel[];
}

const dashboard = JSON.parse(readFileSync(new URL('../../ops/grafana/user-sms.json', import.meta.url), 'utf8')) as Dashboard;
const panels = dashboard.panels.flatMap((panel) => [panel, ...(panel.panels ?? [])]);
const queries = panels.flatMap((panel) => (panel.targets ?? []).map((target) => ({ panel, target })));

/** Grafana's variables as a query runs them: every enterprise, a 5 m rate window. */
function substituteVariables(expr: string): string {
  return expr
    .replace(/\$__rate_interval|\$__interval|\$__range|\$\{__rate_interval\}/g, '5m')
    .replace(/\$enterprise|\$\{enterprise(:\w+)?\}/g, '.*');
}

describe('ops/grafana/user-sms.json', () => {
  it('is importable: no fixed id, a uid, a Prometheus datasource variable that every panel and query uses', () => {
    expect(dashboard.id).toBeNull();
    expect(dashboard.uid).toMatch(/^[a-z0-9-]{1,40}$/);
    expect(dashboard.schemaVersion).toBeGreaterThanOrEqual(36);
    const datasource = dashboard.templating.list.find((v) => v.type === 'datasource');
    expect(datasource).toMatchObject({ name: 'datasource', query: 'prometheus' });
    const ids = panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const panel of panels.filter((p) => p.type !== 'row')) {
      expect(panel.datasource, panel.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      for (const target of panel.targets!) {
        expect(target.datasource, `${panel.title} ${target.refId}`).toEqual({ type: 'prometheus', uid: '${datasource}' });
        expect(target.expr, `${panel.title} ${target.refId}`).toBeTruthy();
      }
    }
  });

  it('shows sends by outcome, latency percentiles, the queue and lines per enterprise, balances, delivery rate and callbacks', () => {
    const all = queries.map((q) => q.target.expr!).join('\n');
    for (const name of [
      'user_sms_sends_total',
      'user_sms_websms_request_duration_seconds_bucket',
      'user_sms_queue_jobs',
      'user_sms_enterprise_waiting_messages',
      'user_sms_websms_balance_byn',
      'user_sms_websms_balance_refreshed_timestamp_seconds',
      'user_sms_delivery_final_total',
      'user_sms_delivery_seconds_bucket',
      'user_sms_callbacks_delivered_total',
      'user_sms_callback_failed_attempts_total',
      'user_sms_callbacks_given_up_total',
      'user_sms_callback_events',
    ]) {
      expect(all).toContain(name);
    }
    expect(all).toMatch(/sum by \(outcome\)/);
    expect(all).toMatch(/histogram_quantile\(0\.95/);
  });

  describe('its queries', () => {
    let exported: Set<string>;

    beforeAll(async () => {
      exported = exportedSampleNames(await scrapeRunningService());
    }, 60_000);

    it('read only metrics a running service exports, the enterprise variable included', () => {
      for (const { panel, target } of queries) {
        const names = metricNamesIn(substituteVariables(target.expr!));
        expect(names.length, `${panel.title} ${target.refId}`).toBeGreaterThan(0);
        for (const name of names) expect(exported.has(name), `${panel.title} ${target.refId}: ${name}`).toBe(true);
      }
      for (const variable of dashboard.templating.list.filter((v) => v.type === 'query')) {
        const metric = /^label_values\((\w+), *\w+\)$/.exec(variable.definition ?? '')?.[1];
        expect(metric && exported.has(metric), `variable ${variable.name}: ${variable.definition}`).toBe(true);
      }
    });
  });

  describe('with promtool', () => {
    const promtool = findTool('promtool');
    if (skipWithoutTool('promtool', promtool, 'prometheus', 'Grafana dashboard query')) return;

    const checkExpressions = (exprs: string[]) => {
      const dir = mkdtempSync(join(tmpdir(), 'user-sms-dashboard-'));
      try {
        // Each query as a recording rule: promtool parses it with Prometheus's own PromQL parser. JSON is YAML.
        const rules = { groups: [{ name: 'dashboard', rules: exprs.map((expr, i) => ({ record: `dashboard:query_${i}`, expr })) }] };
        writeFileSync(join(dir, 'queries.yml'), JSON.stringify(rules, null, 1));
        return spawnSync(promtool!, ['check', 'rules', 'queries.yml'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    };

    it('are valid PromQL, every one', () => {
      const result = checkExpressions(queries.map((q) => substituteVariables(q.target.expr!)));
      expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
      expect(result.stdout).toContain(`SUCCESS: ${queries.length} rules found`);
    });

    it('would be caught if one were not', () => {
      const result = checkExpressions(['sum by (outcome) (rate(user_sms_sends_total[5m])']);
      expect(result.status).not.toBe(0);
    });
  });
});
