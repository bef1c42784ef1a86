import { beforeAll, describe, expect, it } from 'vitest';
import { cleanUpAfterAll, createHarness, deliveryViolations, RATE_LIMIT, sleep, waitFor, type Harness, type Row, type SendResult } from './harness.ts';
import type { SandboxCall } from '../../src/websms/sandbox.ts';

// Long lines under every fault at once: three enterprises with a line of 16 messages each, drained by
// worker processes while one is killed with -9 mid-line, Redis restarts empty, PostgreSQL goes away
// and comes back, and another worker is stopped with SIGTERM. Nothing may be lost or doubled, the
// limit must hold as WebSMS saw it, and each line must reach WebSMS in id order, except a message
// whose send had to be retried (documented: it goes later). Lines Redis lost are rebuilt from the rows.

const PER_ENTERPRISE = 16;
/** The first message of the first line: WebSMS never answers it, so the kill certainly finds it in flight. */
const HANGS = '375291130001';

/** Pairs of an enterprise's first-attempt messages that WebSMS received in the opposite order to their ids. */
function outOfOrderPairs(rows: Row[], calls: SandboxCall[], user: string, onlyFirstAttempts: boolean): number {
  const rowByRef = new Map(rows.map((row) => [row.provider_ref, row]));
  const arrivals = calls
    .filter((call) => call.endpoint === 'send/sms' && call.messageId !== undefined && call.user === user)
    .map((call) => ({ row: rowByRef.get(call.customId ?? null), at: call.at }))
    .filter((arrival): arrival is { row: Row; at: number } => arrival.row !== undefined)
    .filter(({ row }) => !onlyFirstAttempts || (row.attempts === 1 && !row.resent_after_unknown))
    .sort((a, b) => a.at - b.at);
  let pairs = 0;
  for (let i = 0; i < arrivals.length; i++) for (let j = i + 1; j < arrivals.length; j++) if (Number(arrivals[i]!.row.id) > Number(arrivals[j]!.row.id)) pairs++;
  return pairs;
}

describe('long lines through a worker kill -9, Redis restarting empty, a PostgreSQL outage and SIGTERM', () => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness({
      scenario: 'backlog',
      privateRedis: true,
      postgresProxy: true,
      // Sends count from the end of their call, so a 50 ms margin keeps the limit as WebSMS sees it.
      // Attempts enough to outlast both outages (a lookup that cannot reach PostgreSQL uses one up).
      env: { RATE_LIMIT_MARGIN_MS: '50', WEBSMS_TIMEOUT_MS: '2000', SEND_WAIT_MS: '1000', WORKER_CONCURRENCY: '4', SEND_ATTEMPTS: '10' },
    });
  });

  cleanUpAfterAll(() => h);

  it('loses nothing, doubles nothing, keeps the limit, and keeps each line in id order except retried sends', async () => {
    await h.startApi();
    // Only this worker runs at first, so it certainly holds the call that hangs.
    const doomed = await h.startWorker();
    h.sandbox.addFault({ kind: 'hang', count: 1, msisdn: HANGS });
    h.sandbox.setLatency(300);

    const accepted: SendResult[] = [];
    for (let i = 0; i < PER_ENTERPRISE; i++) {
      for (const e of h.enterprises) accepted.push(await h.send({ enterprise: e, wait: false, ...(i === 0 && e === h.enterprises[0] ? { phone: `+${HANGS}` } : {}) }));
    }
    for (const answer of accepted) expect(answer.status, answer.error ?? answer.text).toBe(202);
    const sends = () => h.sandbox.calls().filter((c) => c.endpoint === 'send/sms').length;

    // 1. kill -9 the worker while its call for the first line hangs, with the other lines moving.
    await waitFor('the hanging call and the other lines moving', 20_000, () => h.sandbox.calls().some((c) => c.result === 'hang') && sends() >= 5);
    expect(await doomed.kill9()).toBe('SIGKILL');
    const drained = await h.startWorker();
    await h.startWorker();

    // 2. Redis restarts empty: lines, counts and jobs gone. Down longer than a window, so the sends
    //    before it cannot meet the sends after it in one window.
    await waitFor('more sends after the kill', 20_000, () => sends() >= 12);
    await h.redis!.kill();
    await sleep(RATE_LIMIT.windowMs + 1_000);
    await h.redis!.start();

    // 3. PostgreSQL goes away for a while.
    const beforeOutage = sends();
    await waitFor('sends again after Redis came back', 40_000, () => sends() >= beforeOutage + 4);
    h.postgresProxy!.down();
    await sleep(3_000);
    h.postgresProxy!.open();

    // 4. SIGTERM: a graceful stop, and a replacement.
    const beforeStop = sends();
    await waitFor('sends again after PostgreSQL came back', 40_000, () => sends() >= beforeStop + 4);
    h.sandbox.setLatency(0);
    expect(await drained.stop()).toBe(0);
    await h.startWorker();

    // The killed worker's jobs came back with Redis's restart (the sweeper), or after its locks expired.
    const rows = await h.waitAllFinal(150_000);
    const calls = h.sandbox.calls();
    expect(deliveryViolations(rows, calls, h.enterprises)).toEqual([]);
    for (const answer of accepted) expect(rows.find((r) => Number(r.id) === answer.json.id)?.status, `#${String(answer.json.id)}`).toBe('success');

    const report = h.enterprises.map((e) => ({ enterprise: e.number, firstAttempts: outOfOrderPairs(rows, calls, e.user, true), all: outOfOrderPairs(rows, calls, e.user, false) }));
    const retried = rows.filter((r) => r.attempts > 1 || r.resent_after_unknown).map((r) => `#${r.id}`);
    console.info(`backlog faults: out-of-order pairs per enterprise ${JSON.stringify(report)}; retried sends ${retried.join(', ') || 'none'}`);
    for (const line of report) expect(line.firstAttempts, `enterprise ${line.enterprise}: first attempts out of id order`).toBe(0);
    // The scenario did what it says: the hanging send was looked up, not found, and resent, later.
    expect(rows.find((r) => r.phone === `+${HANGS}`)).toMatchObject({ status: 'success', resent_after_unknown: true });
    // The line was rebuilt from the rows after Redis lost it.
    expect(h.logs().some((l) => l.includes('sweeper re-enqueued'))).toBe(true);
  });
});
