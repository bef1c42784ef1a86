import { beforeAll, describe, expect, it } from 'vitest';
import { acceptedFor, cleanUpAfterAll, createHarness, deliveryViolations, waitFor, type Enterprise, type Harness, type SendResult } from './harness.ts';

// `kill -9` a worker process while it holds claimed messages whose WebSMS calls are still open:
//   - one call WebSMS never accepted (the worker died before the send happened, as far as WebSMS knows),
//   - one WebSMS accepted, the answer not yet back (died after the send, before recording it),
//   - one WebSMS accepted but its lookup will not find (the sandbox hides it): the resend is a real
//     duplicate, which must be recorded on the row, not silent.
// BullMQ hands the stalled jobs to the surviving worker (and a restarted one) once the dead worker's
// locks expire (lockDuration, 30 s); they meet the claim check (`sending`), wait until no call can be in
// flight, look the message up by our reference, and resend only what WebSMS has no record of.

const NEVER_ACCEPTED = '375291120001';
const ACCEPTED = '375291120002';
const ACCEPTED_HIDDEN = '375291120003';

describe('a worker killed mid-send: its messages are recovered, reconciled by lookup, never silently doubled', () => {
  let h: Harness;

  beforeAll(async () => {
    // WebSMS calls may take 10 s, so the open calls are still open when the worker is killed.
    h = await createHarness({ scenario: 'worker kill', env: { WEBSMS_TIMEOUT_MS: '10000', SEND_WAIT_MS: '1000' } });
  });

  cleanUpAfterAll(() => h);

  it('recovers every message a killed worker held, before and after WebSMS accepted it, each sent once (or a recorded duplicate)', async () => {
    const [first, second, third] = h.enterprises as [Enterprise, Enterprise, Enterprise];
    await h.startApi();
    // Only this worker runs while the doomed calls start, so it certainly holds them.
    const doomed = await h.startWorker();

    h.sandbox.addFault({ kind: 'hang', count: 1, msisdn: NEVER_ACCEPTED });
    h.sandbox.addFault({ kind: 'acceptedThenHang', count: 1, msisdn: ACCEPTED });
    h.sandbox.addFault({ kind: 'acceptedThenHang', count: 1, msisdn: ACCEPTED_HIDDEN, hideFromLookup: true });

    const answers: Array<Promise<SendResult>> = [];
    answers.push(h.send({ enterprise: first, phone: `+${NEVER_ACCEPTED}`, wait: false }));
    answers.push(h.send({ enterprise: second, phone: `+${ACCEPTED}`, wait: false }));
    answers.push(h.send({ enterprise: third, phone: `+${ACCEPTED_HIDDEN}`, wait: false }));
    // A backlog behind them for every enterprise (rate limit: 2 per window).
    for (let i = 0; i < 4; i += 1) for (const e of h.enterprises) answers.push(h.send({ enterprise: e, wait: false }));

    await waitFor('the three doomed calls to reach WebSMS', 20_000, () => h.sandbox.calls().filter((c) => c.result === 'hang').length === 3);
    await h.startWorker();
    const held = await h.db.selectFrom('user_sms_send').select(['id', 'status']).where('status', '=', 'sending').execute();
    expect(held.length, 'rows claimed by the doomed worker').toBeGreaterThanOrEqual(3);

    expect(await doomed.kill9()).toBe('SIGKILL');
    // The usual supervisor restarts a dead worker; the survivor alone must also be enough.
    await h.startWorker();
    for (let i = 0; i < 2; i += 1) for (const e of h.enterprises) answers.push(h.send({ enterprise: e, wait: i === 0 }));

    for (const answer of await Promise.all(answers)) {
      expect([200, 202], `${answer.text}: ${answer.status} ${answer.error ?? ''}`).toContain(answer.status);
    }

    // Lock expiry (30 s) + up to two stalled checks (30 s apart) + the reconcile grace.
    const rows = await h.waitAllFinal(110_000);
    const calls = h.sandbox.calls();
    expect(deliveryViolations(rows, calls, h.enterprises)).toEqual([]);
    expect(rows.every((r) => r.status === 'success')).toBe(true);

    const byPhone = (digits: string) => rows.find((r) => r.phone === `+${digits}`)!;
    const neverAccepted = byPhone(NEVER_ACCEPTED);
    expect(acceptedFor(calls, neverAccepted), 'sent once, after the lookup said "not found"').toHaveLength(1);
    expect(neverAccepted.resent_after_unknown).toBe(true);
    const accepted = byPhone(ACCEPTED);
    expect(acceptedFor(calls, accepted), 'found by the lookup, not resent').toHaveLength(1);
    expect(accepted.resent_after_unknown).toBe(false);
    const hidden = byPhone(ACCEPTED_HIDDEN);
    expect(acceptedFor(calls, hidden), 'hidden from the lookup, so resent: a real duplicate').toHaveLength(2);
    expect(hidden.resent_after_unknown, 'and the row says so').toBe(true);
    for (const row of [neverAccepted, accepted, hidden]) {
      const lookups = calls.filter((c) => c.endpoint === 'statusCustom/sms' && c.customId === row.provider_ref);
      expect(lookups.length, `#${row.id} was looked up before anything else happened to it`).toBeGreaterThanOrEqual(1);
    }
  });
});
