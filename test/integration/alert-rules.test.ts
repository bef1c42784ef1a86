import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { exportedSampleNames, metricNamesIn } from '../support/promql.ts';
import { scrapeRunningService } from '../support/service-scrape.ts';
import { findTool, skipWithoutTool } from '../support/tools.ts';

// ops/prometheus/alerts.yml: valid rules (promtool check rules), each proven to fire and to stay
// quiet by its unit tests (promtool test rules, ops/prometheus/alerts.test.yml), over metric names a
// running service really exports.

const PROMETHEUS_DIR = fileURLToPath(new URL('../../ops/prometheus/', import.meta.url));
const promtool = findTool('promtool');

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface RuleTest {
  alert_rule_test: Array<{ alertname: string; exp_alerts: unknown[] }>;
}

async function readYaml<T>(file: string): Promise<T> {
  // `npm ci` always brings it (vitest's vite depends on it), as deployment.test.ts relies on too.
  const { parse } = (await import('yaml')) as { parse: (text: string) => unknown };
  return parse(readFileSync(`${PROMETHEUS_DIR}${file}`, 'utf8')) as T;
}

describe('ops/prometheus/alerts.yml', () => {
  let rules: Rule[];

  beforeAll(async () => {
    rules = (await readYaml<{ groups: Array<{ rules: Rule[] }> }>('alerts.yml')).groups.flatMap((group) => group.rules);
  });

  it('gives every rule a severity and a summary and description for the person on call', () => {
    expect(rules.length).toBeGreaterThanOrEqual(17);
    for (const rule of rules) {
      expect(['page', 'ticket'], rule.alert).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary, rule.alert).toBeTruthy();
      expect(rule.annotations?.description?.length ?? 0, rule.alert).toBeGreaterThan(60);
    }
  });

  it('has a unit test in which each rule fires and one in which it stays quiet', async () => {
    const tests = (await readYaml<{ tests: RuleTest[] }>('alerts.test.yml')).tests.flatMap((group) => group.alert_rule_test);
    for (const rule of rules) {
      const cases = tests.filter((t) => t.alertname === rule.alert);
      expect(cases.some((t) => t.exp_alerts.length > 0), `${rule.alert} fires`).toBe(true);
      expect(cases.some((t) => t.exp_alerts.length === 0), `${rule.alert} stays quiet`).toBe(true);
    }
  });

  it('reads only metrics a running service exports (and Prometheus own `up`)', async () => {
    const exported = exportedSampleNames(await scrapeRunningService());
    exported.add('up');
    for (const rule of rules) {
      const names = metricNamesIn(rule.expr);
      expect(names.length, rule.alert).toBeGreaterThan(0);
      for (const name of names) expect(exported.has(name), `${rule.alert}: ${name}`).toBe(true);
    }
  });

  describe('with promtool', () => {
    if (skipWithoutTool('promtool', promtool, 'prometheus', 'alert rule')) return;
    const run = (...args: string[]) => spawnSync(promtool!, args, { cwd: PROMETHEUS_DIR, encoding: 'utf8', timeout: 60_000 });

    it('passes promtool check rules', () => {
      const result = run('check', 'rules', 'alerts.yml');
      expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
      expect(result.stdout).toMatch(/SUCCESS: \d+ rules found/);
    });

    it('passes promtool test rules: every rule fires when it should and stays quiet otherwise', () => {
      const result = run('test', 'rules', 'alerts.test.yml');
      expect(result.status, `${result.stdout}${result.stderr}`).toBe(0);
      expect(result.stdout).toContain('SUCCESS');
    });

    it('fails promtool test rules when a rule is broken (the tests can fail)', () => {
      const broken = readFileSync(`${PROMETHEUS_DIR}alerts.yml`, 'utf8').replace('user_sms_workers_alive == 0', 'user_sms_workers_alive == 1');
      const dir = mkdtempSync(join(tmpdir(), 'user-sms-rules-'));
      try {
        writeFileSync(join(dir, 'alerts.yml'), broken);
        writeFileSync(join(dir, 'alerts.test.yml'), readFileSync(`${PROMETHEUS_DIR}alerts.test.yml`, 'utf8'));
        const result = spawnSync(promtool!, ['test', 'rules', 'alerts.test.yml'], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
        expect(result.status).not.toBe(0);
        expect(`${result.stdout}${result.stderr}`).toContain('UserSmsNoLiveWorker');
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
