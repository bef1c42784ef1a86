import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SendPhaseEvent } from '../../src/metrics/send-phases.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';

// The phases a send publishes (src/metrics/send-phases.ts), which the benchmark's hop-by-hop breakdown
// is built on: every one of them, for the right message, in the order the send meets them.

describe('send phases', () => {
  let env: TestEnv;
  let baseUrl: string;
  const seen: SendPhaseEvent[] = [];
  const listener = (event: unknown) => seen.push(event as SendPhaseEvent);

  beforeAll(async () => {
    env = await createTestEnv();
    await env.seedEnterprise({ number: '0367', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
    const { api } = await env.startService({ workers: 1 });
    baseUrl = api!.url;
    subscribe('user-sms:send-phase', listener);
  });
  afterAll(async () => {
    unsubscribe('user-sms:send-phase', listener);
    await env?.cleanup();
  });

  it('a send publishes each phase once, in order, the API naming its request and the worker its message', async () => {
    const answer = await postJson(baseUrl, '/send', { enterprise_number: '0367', phone: '+375296254070', text: 'phases' });
    expect(answer.status, answer.text).toBe(200);
    const id = answer.json.id as number;

    await eventually(() => (seen.some((e) => e.phase === 'job-completed' && e.messageId === id) ? true : undefined));
    const admitted = seen.find((e) => e.phase === 'admitted' && e.messageId === id);
    expect(admitted?.command).toBeDefined();
    const validated = seen.find((e) => e.phase === 'validated' && e.command === admitted!.command);
    expect(validated?.request).toBeDefined();
    const ofThisSend = seen.filter((e) => e.command === admitted!.command || e.messageId === id).map((e) => e.phase);
    const apiPart = ofThisSend.filter((p) => ['validated', 'enterprise-read', 'admitted', 'enqueued', 'outcome-received'].includes(p));
    const workerPart = ofThisSend.filter((p) => ['job-started', 'turn-taken', 'claimed', 'websms-answered', 'recorded', 'job-completed'].includes(p));
    expect(apiPart).toEqual(['validated', 'enterprise-read', 'admitted', 'enqueued', 'outcome-received']);
    expect(workerPart).toEqual(['job-started', 'turn-taken', 'claimed', 'websms-answered', 'recorded', 'job-completed']);
    // The outcome reaches the API only after the worker recorded it.
    expect(ofThisSend.indexOf('recorded')).toBeLessThan(ofThisSend.indexOf('outcome-received'));
  });
});
