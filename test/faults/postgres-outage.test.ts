import { beforeAll, describe, expect, it } from 'vitest';
import type { SandboxCall } from '../../src/websms/sandbox.ts';
import { acceptedFor, cleanUpAfterAll, createHarness, deliveryViolations, sleep, waitFor, type Harness, type Row, type SendResult } from './harness.ts';

// PostgreSQL unreachable for a while, through a TCP proxy in front of the shared server (which is
// never touched): every open connection is reset and new ones are refused, then the proxy opens again.
// WebSMS answers slowly, so sends are in flight when the database goes: WebSMS accepts them while
// the worker cannot record it. Such a send must end `success` once PostgreSQL is back, not be sent
// again. The outage lasts longer than the whole retry budget (4 attempts, 250 ms backoff), so jobs fail
// for good meanwhile and the sweeper must give them another run. The API answers clear 503s, never
// hangs, and a 503 that says nothing was sent must be true.

const OUTAGE_MS = 8_000;
/** A refused or reset connection: the API knows at once. */
const OUTAGE_ANSWER_BOUND_MS = 5_000;
/**
 * Dropped packets: nothing says the server is gone, so a query waits for the pool's read timeout
 * (statement timeout 10 s + 1 s) before the API can answer. Slow, but bounded and below the 30 s proxy.
 */
const STALL_ANSWER_BOUND_MS = 20_000;

/**
 * A 503 that says neither "stored, will be sent" (status pending) nor "may have been stored" (status
 * unknown: its insert's answer was lost) promises nothing was sent: WebSMS must agree.
 */
function expectTruthful503s(rows: Row[], calls: SandboxCall[], answers: SendResult[]): void {
  for (const answer of answers) {
    const row = rows.find((r) => r.text === answer.text);
    if (answer.status === 503 && answer.json.status === 'unknown') continue;
    if (answer.status === 503 && answer.json.status !== 'pending') {
      expect(row ? acceptedFor(calls, row) : [], `${answer.text}: answered ${answer.status} "${String(answer.json.error)}" but WebSMS got it`).toHaveLength(0);
    } else {
      expect(row, `${answer.text}: answered ${answer.status}, so it has a row`).toBeDefined();
    }
  }
}

describe('PostgreSQL unavailable for a while: clear 503s, outcomes recorded once it is back, nothing lost or resent', () => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness({
      scenario: 'postgres outage',
      postgresProxy: true,
      env: { SEND_ATTEMPTS: '4', RETRY_BACKOFF_MS: '250', WEBSMS_TIMEOUT_MS: '4000', SEND_WAIT_MS: '3000' },
    });
    await Promise.all([h.startApi(), h.startWorker(), h.startWorker()]);
  });

  cleanUpAfterAll(() => h);

  it('records sends WebSMS accepted during the outage as success, resends nothing, loses nothing', async () => {
    h.sandbox.setLatency(1_500);
    const before: Array<Promise<SendResult>> = [];
    for (let i = 0; i < 4; i += 1) for (const e of h.enterprises) before.push(h.send({ enterprise: e, wait: false }));
    for (const answer of await Promise.all(before)) expect(answer.status, answer.error ?? answer.text).toBe(202);
    // Callers waiting for their result when the database goes away.
    const waiting = h.enterprises.map((e) => h.send({ enterprise: e, timeoutMs: 20_000 }));

    await waitFor('the waiting callers admitted and WebSMS calls in flight', 10_000, async () => {
      const rows = await h.rows();
      return rows.length === before.length + waiting.length && rows.filter((r) => r.status === 'sending').length >= 3;
    });
    h.postgresProxy!.down();
    const cutAt = Date.now();

    const during: SendResult[] = [];
    for (let i = 0; i < 4; i += 1) during.push(await h.send({ enterprise: h.enterprises[i % 3], wait: i % 2 === 0, timeoutMs: 20_000 }));
    const health = await fetch(`${h.apiUrl}/health`, { signal: AbortSignal.timeout(15_000) });
    expect(health.status).toBe(503);
    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - cutAt)));
    h.postgresProxy!.open();
    const restoredAt = Date.now();
    h.sandbox.setLatency(0);

    for (const answer of during) {
      expect(answer.status, `${answer.text}: ${answer.error ?? JSON.stringify(answer.json)}`).toBe(503);
      expect(answer.ms, `${answer.text} answered in ${answer.ms} ms`).toBeLessThan(OUTAGE_ANSWER_BOUND_MS);
    }
    const waited = await Promise.all(waiting);
    for (const answer of waited) expect(answer.status, `${answer.text}: ${answer.error ?? ''}`).not.toBeNull();

    await waitFor('the API to report healthy again', 20_000, async () => {
      const response = await fetch(`${h.apiUrl}/health`, { signal: AbortSignal.timeout(5_000) }).catch(() => undefined);
      await response?.arrayBuffer();
      return response?.status === 200;
    });
    const after: Array<Promise<SendResult>> = [];
    for (const e of h.enterprises) after.push(h.send({ enterprise: e, wait: true, timeoutMs: 20_000 }));
    for (const answer of await Promise.all(after)) expect([200, 202], `${answer.text}: ${answer.status} ${answer.error ?? ''}`).toContain(answer.status);

    const rows = await h.waitAllFinal(60_000);
    const calls = h.sandbox.calls();
    expect(deliveryViolations(rows, calls, h.enterprises)).toEqual([]);
    for (const row of rows) {
      expect(row.status, `#${row.id}`).toBe('success');
      expect(acceptedFor(calls, row), `#${row.id} sent exactly once`).toHaveLength(1);
    }
    // The scenario did what it says: WebSMS accepted sends whose answers came while PostgreSQL was away.
    const acceptedDuringOutage = h.sandbox.acceptedSends().filter((c) => c.at + 1_500 > cutAt && c.at < restoredAt);
    expect(acceptedDuringOutage.length).toBeGreaterThan(0);

    // Every 503 that said "nothing was sent" must be true; every other answer names a message that went out.
    expectTruthful503s(rows, calls, [...during, ...waited]);
    // Callers admitted before the outage hear that their message is on its way (202 or its result).
    for (const answer of waited) {
      expect([200, 202], `${answer.text}: ${answer.status} ${String(answer.json.error)}`).toContain(answer.status);
      expect(answer.json.id).toBe(Number(rows.find((r) => r.text === answer.text)!.id));
    }
  });

  it('answers 503 within a bound, never hangs, when PostgreSQL stops answering (packets dropped), then recovers', async () => {
    const known = (await h.rows()).length;
    h.sandbox.setLatency(1_500);
    const before: Array<Promise<SendResult>> = [];
    for (let i = 0; i < 2; i += 1) for (const e of h.enterprises) before.push(h.send({ enterprise: e, wait: false }));
    for (const answer of await Promise.all(before)) expect(answer.status, answer.error ?? answer.text).toBe(202);
    const waiting = h.enterprises.map((e) => h.send({ enterprise: e, timeoutMs: 30_000 }));
    await waitFor('the waiting callers admitted and WebSMS calls in flight', 10_000, async () => {
      const rows = await h.rows();
      return rows.length === known + before.length + waiting.length && rows.filter((r) => r.status === 'sending').length >= 2;
    });
    h.postgresProxy!.stall();
    const stalledAt = Date.now();

    const during = await Promise.all(h.enterprises.map((e, i) => h.send({ enterprise: e, wait: i % 2 === 0, timeoutMs: 30_000 })));
    await sleep(Math.max(0, OUTAGE_MS - (Date.now() - stalledAt)));
    h.postgresProxy!.open();
    h.sandbox.setLatency(0);

    for (const answer of during) {
      expect(answer.status, `${answer.text}: ${answer.error ?? JSON.stringify(answer.json)}`).toBe(503);
      expect(answer.ms, `${answer.text} answered in ${answer.ms} ms`).toBeLessThan(STALL_ANSWER_BOUND_MS);
    }
    const waited = await Promise.all(waiting);

    const rows = await h.waitAllFinal(60_000);
    const calls = h.sandbox.calls();
    expect(deliveryViolations(rows, calls, h.enterprises)).toEqual([]);
    for (const row of rows) {
      expect(row.status, `#${row.id}`).toBe('success');
      expect(acceptedFor(calls, row), `#${row.id} sent exactly once`).toHaveLength(1);
    }
    expectTruthful503s(rows, calls, [...during, ...waited]);
    for (const answer of waited) expect([200, 202], `${answer.text}: ${answer.status} ${String(answer.json.error)}`).toContain(answer.status);
  });
});
