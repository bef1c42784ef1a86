import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimDueHeads, insertEvent, insertEvents, recordAttempts, type NewCallbackEvent } from '../../src/callbacks/callback-repository.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, type TestEnv } from '../support/context.ts';

// The rows are the callback queue: which events a dispatcher may claim, and what recording an attempt
// makes due next. Real PostgreSQL (this file's own database, so every due event is this file's), with
// concurrent claims forced by holding one claim's transaction open.

let env: TestEnv;
const LEASE = { leaseMs: 60_000 };

beforeAll(async () => {
  env = await createTestEnv();
  await env.seedEnterprise({ number: '0367', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
});
afterAll(async () => {
  await env?.cleanup();
});

async function message(): Promise<number> {
  const row = await env.db
    .insertInto('user_sms_send')
    .values({ enterprise_number: '0367', phone: '+375290000001', text: 'claims', status: 'success', provider_ref: `u${randomBytes(6).toString('hex')}`, callback_url: 'http://crm.test/x' })
    .returning('id')
    .executeTakeFirstOrThrow();
  return Number(row.id);
}

function event(messageId: number, type: string): NewCallbackEvent {
  return { messageId, type, revision: 0, webhookId: `msg_${randomBytes(8).toString('hex')}`, url: 'http://crm.test/x', body: '{}', createdAt: new Date() };
}

/** Nothing left due from earlier tests: each test claims only its own events. */
async function settleEverything(): Promise<void> {
  await sql`UPDATE callback_events SET status = 'delivered', finished_at = now() WHERE status = 'pending'`.execute(env.db);
}

/** Ends the lease of a claimed event, as the passing of time would. */
async function endLease(eventId: number): Promise<void> {
  await sql`UPDATE callback_events SET next_attempt_at = now() - interval '1 second' WHERE id = ${String(eventId)}`.execute(env.db);
}

const delivered = (eventId: number) => ({ eventId, outcome: 'delivered' as const, httpStatus: 204, error: null, nextAttemptAt: null });

describe('claiming callback events', () => {
  it("claims only a message's oldest pending event, and the next once the first is recorded", async () => {
    await settleEverything();
    const id = await message();
    const first = (await insertEvent(env.db, event(id, 'message.sent')))!;
    const second = (await insertEvent(env.db, event(id, 'message.delivered')))!;

    expect((await claimDueHeads(env.db, { limit: 10, ...LEASE })).map((e) => e.id)).toEqual([first.id]);
    // Out on its lease: neither it nor its successor is claimed.
    expect(await claimDueHeads(env.db, { limit: 10, ...LEASE })).toEqual([]);

    expect(await recordAttempts(env.db, [delivered(first.id)])).toEqual([first.id]);
    const next = await claimDueHeads(env.db, { limit: 10, ...LEASE });
    expect(next.map((e) => e.id)).toEqual([second.id]);
    expect(next[0]).toMatchObject({ type: 'message.delivered', status: 'pending', attempts: 0 });
  });

  it('gives a claimed event back when its lease ends (its process died), with the same webhook-id', async () => {
    await settleEverything();
    const id = await message();
    const raised = event(id, 'message.sent');
    const inserted = (await insertEvent(env.db, raised))!;
    const [claimed] = await claimDueHeads(env.db, { limit: 10, ...LEASE });
    expect(claimed?.id).toBe(inserted.id);
    expect(await claimDueHeads(env.db, { limit: 10, ...LEASE })).toEqual([]);

    await endLease(inserted.id);
    const [again] = await claimDueHeads(env.db, { limit: 10, ...LEASE });
    expect(again).toMatchObject({ id: inserted.id, webhookId: raised.webhookId, body: raised.body });
  });

  it('never hands one event to two claims at once, nor the next event of its message', async () => {
    await settleEverything();
    const [a, b] = [await message(), await message()];
    const firstOfA = (await insertEvent(env.db, event(a, 'message.sent')))!;
    await insertEvent(env.db, event(a, 'message.delivered'));
    const firstOfB = (await insertEvent(env.db, event(b, 'message.sent')))!;

    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let claimedFirst!: (ids: number[]) => void;
    const firstClaim = new Promise<number[]>((resolve) => (claimedFirst = resolve));
    // One claim holds its rows locked (its transaction stays open) while another claims beside it.
    const holding = env.db.transaction().execute(async (trx) => {
      claimedFirst((await claimDueHeads(trx, { limit: 1, ...LEASE })).map((e) => e.id));
      await released;
    });
    const held = await firstClaim;
    expect(held).toHaveLength(1);
    // SKIP LOCKED: the other claim does not wait, takes the other message's head, and never the held
    // message's next event (its head is still pending).
    const beside = (await claimDueHeads(env.db, { limit: 10, ...LEASE })).map((e) => e.id);
    release();
    await holding;
    expect([...held, ...beside].sort((x, y) => x - y)).toEqual([firstOfA.id, firstOfB.id]);
    expect(await claimDueHeads(env.db, { limit: 10, ...LEASE })).toEqual([]);
  });

  it('keeps a failed attempt pending until its next attempt, and a given-up event lets the next one through', async () => {
    await settleEverything();
    const id = await message();
    const first = (await insertEvent(env.db, event(id, 'message.sent')))!;
    const second = (await insertEvent(env.db, event(id, 'message.delivered')))!;
    await claimDueHeads(env.db, { limit: 10, ...LEASE });

    const later = new Date(Date.now() + 3_600_000);
    await recordAttempts(env.db, [{ eventId: first.id, outcome: 'retry', httpStatus: 500, error: 'HTTP 500', nextAttemptAt: later }]);
    const [row] = (await sql<{ status: string; attempts: number; next_attempt_at: Date; last_error: string }>`
      SELECT status, attempts, next_attempt_at, last_error FROM callback_events WHERE id = ${String(first.id)}`.execute(env.db)).rows;
    expect(row).toMatchObject({ status: 'pending', attempts: 1, last_error: 'HTTP 500' });
    expect(row!.next_attempt_at.getTime()).toBe(later.getTime());
    expect(await claimDueHeads(env.db, { limit: 10, ...LEASE })).toEqual([]);

    await endLease(first.id);
    expect((await claimDueHeads(env.db, { limit: 10, ...LEASE })).map((e) => e.id)).toEqual([first.id]);
    await recordAttempts(env.db, [{ eventId: first.id, outcome: 'given_up', httpStatus: null, error: 'connection failed (ECONNREFUSED)', nextAttemptAt: null }]);
    expect((await claimDueHeads(env.db, { limit: 10, ...LEASE })).map((e) => e.id)).toEqual([second.id]);
    // A late record of an event no longer pending (claimed again after its lease) changes nothing.
    expect(await recordAttempts(env.db, [delivered(first.id)])).toEqual([]);
    const [given] = (await sql<{ status: string; attempts: number }>`SELECT status, attempts FROM callback_events WHERE id = ${String(first.id)}`.execute(env.db)).rows;
    expect(given).toEqual({ status: 'given_up', attempts: 2 });
  });
});

describe('raising callback events', () => {
  it('leases a raised event to its raiser when it is its message’s head, and leaves it due otherwise', async () => {
    await settleEverything();
    const id = await message();
    const first = (await insertEvent(env.db, event(id, 'message.sent'), { claimForMs: 60_000 }))!;
    expect(first.claimed).toBe(true);
    // Leased to its raiser: no dispatcher claims it until the lease ends.
    expect(await claimDueHeads(env.db, { limit: 10, ...LEASE })).toEqual([]);
    // Its successor, raised while it is pending, is not leased, and waits for it.
    const second = (await insertEvent(env.db, event(id, 'message.delivered'), { claimForMs: 60_000 }))!;
    expect(second.claimed).toBe(false);
    expect(await claimDueHeads(env.db, { limit: 10, ...LEASE })).toEqual([]);
    await recordAttempts(env.db, [delivered(first.id)]);
    expect((await claimDueHeads(env.db, { limit: 10, ...LEASE })).map((e) => e.id)).toEqual([second.id]);
  });

  it('is waited for by a raise while its attempt is being recorded, so the next event is leased only once it finished', async () => {
    await settleEverything();
    const id = await message();
    const first = (await insertEvent(env.db, event(id, 'message.sent')))!;
    await claimDueHeads(env.db, { limit: 10, ...LEASE });

    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let recordWritten!: () => void;
    const written = new Promise<void>((resolve) => (recordWritten = resolve));
    const recording = env.db.transaction().execute(async (trx) => {
      expect(await recordAttempts(trx, [delivered(first.id)])).toEqual([first.id]);
      recordWritten();
      await released;
    });
    await written;
    let raisedYet = false;
    const raising = insertEvent(env.db, event(id, 'message.delivered'), { claimForMs: 60_000 }).finally(() => (raisedYet = true));
    // The raise waits on the pending row the open record holds (a backend waiting on a lock).
    for (;;) {
      const [waiting] = (await sql<{ n: string }>`
        SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`.execute(env.db)).rows;
      if (Number(waiting?.n) > 0 || raisedYet) break;
    }
    expect(raisedYet).toBe(false);
    release();
    await recording;
    // After the commit it sees the first event finished: the new one is the head, leased to its raiser.
    expect((await raising)?.claimed).toBe(true);
  });

  it('leases only as many of a round as its raiser has room for', async () => {
    await settleEverything();
    const [x, y] = [await message(), await message()];
    const raised = await insertEvents(env.db, [event(x, 'message.delivered'), event(y, 'message.delivered')], { claimForMs: 60_000, claims: 1 });
    expect(Object.fromEntries(raised.map((r) => [r.messageId, r.claimed]))).toEqual({ [x]: true, [y]: false });
    expect((await claimDueHeads(env.db, { limit: 10, ...LEASE })).map((e) => e.messageId)).toEqual([y]);
  });

  it('raises a change once: the same change again records nothing', async () => {
    const id = await message();
    const raise = event(id, 'message.sent');
    expect(await insertEvent(env.db, raise)).toMatchObject({ id: expect.any(Number) as number });
    expect(await insertEvent(env.db, { ...raise, webhookId: `msg_${randomBytes(8).toString('hex')}` })).toBeUndefined();
  });

  it('raises a round of several messages in one statement, each change once', async () => {
    const [x, y] = [await message(), await message()];
    const raised = await insertEvents(env.db, [event(y, 'message.delivered'), event(x, 'message.delivered')]);
    expect(raised.map((r) => r.messageId).sort((p, q) => p - q)).toEqual([x, y]);
    expect(await insertEvents(env.db, [{ ...event(x, 'message.delivered'), webhookId: 'msg_again' }])).toEqual([]);
  });
});
