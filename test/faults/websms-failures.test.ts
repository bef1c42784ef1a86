import { beforeAll, describe, expect, it } from 'vitest';
import { sandboxTriggers } from '../../src/websms/sandbox.ts';
import { acceptedFor, cleanUpAfterAll, createHarness, deliveryViolations, waitFor, type Enterprise, type Harness, type Row } from './harness.ts';

// WebSMS misbehaving under load: HTTP 500s, timeouts before and after acceptance, garbage bodies,
// error 7 storms, a lookup that lies and a lookup that is impossible. The service runs as an API and
// two worker processes; five enterprises send at once, each failure class on its own recipient.
//
// Documented outcomes (websms-api.md "Is a retry safe?"):
//   accepted, then 500 / garbage / no answer  → looked up, found          → success, sent once
//   not accepted, then 500 / garbage           → looked up, not found      → resent (recorded), failed once attempts run out
//   not accepted, no answer (once)             → looked up, not found      → resent (recorded), success, sent once
//   error 7 / error 1                          → retried                    → success, or failed (websms_7) with nothing sent
//   accepted but hidden from the lookup        → resent: a real duplicate   → success, resent_after_unknown = true
//   accepted, then the lookup keeps failing    → never resent on its own    → unknown, sent once

const phone = (digits: string) => `+${digits}`;
const HIDDEN = '375291110001';
const LOOKUP_FAILS = '375291110002';
const ACCEPTED_THEN_GARBAGE = '375291110003';
const ACCEPTED_THEN_HANG = '375291110004';

describe('WebSMS failures under load end in their documented outcome, never in a silent duplicate', () => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness({
      scenario: 'websms failures',
      enterprises: 5,
      env: { WEBSMS_TIMEOUT_MS: '1500', SEND_ATTEMPTS: '4', RETRY_BACKOFF_MS: '150', SEND_WAIT_MS: '2000' },
    });
    await Promise.all([h.startApi(), h.startWorker(), h.startWorker()]);
  });

  cleanUpAfterAll(() => h);

  it('gives each failure class its documented outcome, sends nothing twice unless made to, and keeps the limit', async () => {
    const [storm, flaky, lost, special, plain] = h.enterprises as [Enterprise, Enterprise, Enterprise, Enterprise, Enterprise];
    // Specific faults first: the first matching fault wins.
    h.sandbox.addFault({ kind: 'acceptedThenHttp500', count: 1, msisdn: HIDDEN, hideFromLookup: true });
    h.sandbox.addFault({ kind: 'acceptedThenHttp500', count: 1, msisdn: LOOKUP_FAILS });
    h.sandbox.addFault({ kind: 'acceptedThenGarbage', count: 1, msisdn: ACCEPTED_THEN_GARBAGE });
    h.sandbox.addFault({ kind: 'acceptedThenHang', count: 1, msisdn: ACCEPTED_THEN_HANG });
    // An error 7 storm on one enterprise: its next 8 sends are refused.
    h.sandbox.addFault({ kind: 'error7', count: 8, user: storm.user });

    type Check = (row: Row, sends: number) => void;
    const sentOnce = (status: string): Check => (row, sends) => {
      expect(row.status, `#${row.id}`).toBe(status);
      expect(sends, `#${row.id} accepted sends`).toBe(1);
    };
    const failedUnsent = (code: string): Check => (row, sends) => {
      expect(row, `#${row.id}`).toMatchObject({ status: 'failed', error_code: code });
      expect(sends, `#${row.id} accepted sends`).toBe(0);
    };
    const stormOutcome: Check = (row, sends) => {
      // Refused 4 times in a row (every attempt) is a documented failure; otherwise it went out once.
      if (row.status === 'failed') {
        expect(row.error_code).toBe('websms_7');
        expect(sends).toBe(0);
      } else {
        expect(row.status).toBe('success');
        expect(sends).toBe(1);
      }
    };
    const resentAndRecorded: Check = (row, sends) => {
      sentOnce('success')(row, sends);
      expect(row.resent_after_unknown, 'resent after a lookup said "not found": recorded').toBe(true);
    };
    const hiddenDuplicate: Check = (row, sends) => {
      expect(row.status).toBe('success');
      expect(sends, 'the hidden send and the resend').toBe(2);
      expect(row.resent_after_unknown, 'the duplicate is recorded, not silent').toBe(true);
    };

    const cases: Array<{ enterprise: Enterprise; digits?: string; wait?: boolean; check: Check }> = [
      ...Array.from({ length: 6 }, () => ({ enterprise: storm, check: stormOutcome })),
      { enterprise: lost, digits: sandboxTriggers.http500, check: failedUnsent('not_sent') },
      { enterprise: lost, digits: sandboxTriggers.garbage, check: failedUnsent('not_sent') },
      { enterprise: lost, digits: sandboxTriggers.rateLimited, check: failedUnsent('websms_7') },
      { enterprise: flaky, digits: sandboxTriggers.acceptedThenHttp500, check: sentOnce('success') },
      { enterprise: flaky, digits: sandboxTriggers.hangOnce, check: resentAndRecorded },
      { enterprise: flaky, digits: sandboxTriggers.acceptedThenHangOnce, check: sentOnce('success') },
      { enterprise: flaky, digits: sandboxTriggers.rateLimitedOnce, check: sentOnce('success') },
      { enterprise: flaky, digits: sandboxTriggers.internalErrorOnce, check: sentOnce('success') },
      { enterprise: special, digits: HIDDEN, check: hiddenDuplicate },
      { enterprise: special, digits: LOOKUP_FAILS, check: sentOnce('unknown') },
      { enterprise: special, digits: ACCEPTED_THEN_GARBAGE, check: sentOnce('success') },
      { enterprise: special, digits: ACCEPTED_THEN_HANG, check: sentOnce('success') },
      // Callers that wait for their result while all of this goes on.
      ...Array.from({ length: 4 }, () => ({ enterprise: plain, wait: true, check: sentOnce('success') })),
    ];
    const sent = cases.map((c) => h.send({ enterprise: c.enterprise, ...(c.digits ? { phone: phone(c.digits) } : {}), wait: c.wait ?? false }));

    // The lookup for LOOKUP_FAILS must fail every time: it comes at least WEBSMS_TIMEOUT_MS + 1 s after
    // its send, so there is time to learn its reference.
    const lookupFails = await sent[cases.findIndex((c) => c.digits === LOOKUP_FAILS)]!;
    expect(lookupFails.status).toBe(202);
    const ref = await waitFor('the reference of the message whose lookups fail', 5_000, async () => {
      const row = await h.db.selectFrom('user_sms_send').select('provider_ref').where('id', '=', String(lookupFails.json.id)).executeTakeFirst();
      return row?.provider_ref ?? undefined;
    });
    h.sandbox.addFault({ kind: 'http500', count: 100, endpoint: 'statusCustom/sms', customId: ref });

    const answers = await Promise.all(sent);
    const expected = new Map<string, Check>();
    for (const [i, answer] of answers.entries()) {
      expect([200, 202], `${answer.text}: ${answer.status} ${answer.error ?? ''}`).toContain(answer.status);
      expected.set(answer.text, cases[i]!.check);
    }

    const rows = await h.waitAllFinal(90_000);
    const calls = h.sandbox.calls();
    expect(deliveryViolations(rows, calls, h.enterprises, { unknownAllowed: (row) => row.phone === phone(LOOKUP_FAILS) })).toEqual([]);
    expect(rows).toHaveLength(cases.length);
    for (const row of rows) {
      const check = expected.get(row.text);
      expect(check, `an expectation for ${row.text}`).toBeDefined();
      check!(row, acceptedFor(calls, row).length);
    }
    expect(h.sandbox.faultsLeft(), 'the storm and the one-off faults all fired').toBe(100 - calls.filter((c) => c.endpoint === 'statusCustom/sms' && c.customId === ref).length);
    expect(calls.filter((c) => c.user === storm.user && c.errorCode === 7)).toHaveLength(8);
  });
});
