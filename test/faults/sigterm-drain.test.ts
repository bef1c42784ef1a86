import { beforeAll, describe, expect, it } from 'vitest';
import { acceptedFor, cleanUpAfterAll, createHarness, deliveryViolations, waitFor, type Harness, type SendResult } from './harness.ts';

// SIGTERM to the API and every worker at once, under load: WebSMS calls in flight (the sandbox answers
// slowly), callers waiting on POST /send, a backlog delayed by the rate limit. A graceful drain means:
// each process exits 0 on its own; every waiting caller gets an answer (202 with its message id), not a
// dropped connection; every call in flight is finished and recorded (no row left `sending`); the
// backlog stays in Redis and PostgreSQL. Started again, the service sends everything exactly once.

describe('SIGTERM under load: a graceful drain, exit 0, and no message lost or doubled after a restart', () => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness({ scenario: 'sigterm drain', env: { SEND_WAIT_MS: '20000' } });
    await Promise.all([h.startApi(), h.startWorker(), h.startWorker()]);
  });

  cleanUpAfterAll(() => h);

  it('drains the API and the workers, then delivers the rest once restarted', async () => {
    h.sandbox.setLatency(800);
    const backlog: Array<Promise<SendResult>> = [];
    for (let i = 0; i < 5; i += 1) for (const e of h.enterprises) backlog.push(h.send({ enterprise: e, wait: false }));
    for (const answer of await Promise.all(backlog)) expect(answer.status, answer.error ?? answer.text).toBe(202);
    const waiting = h.enterprises.map((e) => h.send({ enterprise: e, timeoutMs: 30_000 }));
    await waitFor('the waiting callers admitted and WebSMS calls in flight', 10_000, async () => {
      const rows = await h.rows();
      return rows.length === backlog.length + waiting.length && rows.filter((r) => r.status === 'sending').length >= 2;
    });

    const running = h.processes();
    const stopStarted = Date.now();
    for (const p of running) p.child.kill('SIGTERM');
    // The drain must end on its own, well before the service's own deadline (websms timeout + 15 s).
    const codes = await Promise.race([
      Promise.all(running.map((p) => p.exited)),
      new Promise<never>((_, reject) => setTimeout(() => reject(new Error('drain did not finish within 20 s')), 20_000)),
    ]);
    expect(codes, 'every process exits 0').toEqual(running.map(() => 0));
    const drainMs = Date.now() - stopStarted;

    for (const answer of await Promise.all(waiting)) {
      expect(answer.status, `${answer.text}: ${answer.error ?? ''} (a waiting caller is answered, not cut off)`).not.toBeNull();
      expect([200, 202]).toContain(answer.status);
      expect(typeof answer.json.id).toBe('number');
    }
    const afterDrain = await h.rows();
    expect(afterDrain.filter((r) => r.status === 'sending'), 'every call in flight was finished and recorded').toEqual([]);
    const sentBeforeRestart = h.sandbox.acceptedSends().length;
    expect(sentBeforeRestart, 'some sends happened before the drain').toBeGreaterThan(0);
    expect(afterDrain.filter((r) => r.status !== 'success').length, 'a backlog was left for after the restart').toBeGreaterThan(0);

    h.sandbox.setLatency(0);
    await Promise.all([h.startApi(), h.startWorker(), h.startWorker()]);
    const rows = await h.waitAllFinal(60_000);
    const calls = h.sandbox.calls();
    expect(deliveryViolations(rows, calls, h.enterprises)).toEqual([]);
    for (const row of rows) {
      expect(row.status, `#${row.id}`).toBe('success');
      expect(acceptedFor(calls, row), `#${row.id} sent exactly once`).toHaveLength(1);
    }
    expect(drainMs).toBeLessThan(20_000);
  });
});
