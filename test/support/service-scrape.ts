import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson } from './context.ts';
import { parsePrometheusText, sampleValue, type ParsedFamily } from './prometheus-text.ts';

/**
 * One /metrics scrape of a real running service (API, a worker with its balance watch, the WebSMS
 * sandbox) after a send and a balance refresh, so that every source has been read: what alert rules
 * and dashboards may query. Scraped from the host itself, as a local Prometheus would (the operator
 * when ADMIN_USER is unset).
 */
export async function scrapeRunningService(): Promise<Map<string, ParsedFamily>> {
  const env = await createTestEnv();
  try {
    await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    const baseUrl = (await env.startService({ workers: 1 })).api!.url;
    const sent = await postJson(baseUrl, '/send', { enterprise_number: '0367', phone: '+375296254070', text: 'scraped' });
    if (sent.status !== 200) throw new Error(`send answered ${sent.status}: ${sent.text}`);
    return await eventually(async () => {
      const response = await fetch(`${baseUrl}/metrics`);
      if (response.status !== 200) throw new Error(`/metrics answered ${response.status}`);
      const families = parsePrometheusText(await response.text());
      const ready =
        sampleValue(families, 'user_sms_websms_balance_byn', { enterprise: '0367', account: 'sms' }) !== undefined &&
        sampleValue(families, 'user_sms_sends_total', { enterprise: '0367', outcome: 'success' }) === 1 &&
        families.get('user_sms_metrics_source_up')!.samples.every((sample) => sample.value === 1);
      return ready ? families : undefined;
    }, 20_000);
  } finally {
    await env.cleanup();
  }
}
