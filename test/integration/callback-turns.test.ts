import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findHead, insertEvent, insertEvents, recordDelivered, type NewCallbackEvent } from '../../src/callbacks/callback-repository.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, type TestEnv } from '../support/context.ts';

// Whose turn it is when an event is raised while the one before it is being finished. The raise
// writes and looks in one statement (insertEvent); the finish writes (recordDelivered) and then looks
// (findHead). Whichever order PostgreSQL runs them in, one of the two must find the new event to be
// next: otherwise it waits for the callback sweeper. Real PostgreSQL, with the interleavings forced
// by holding one side's transaction open.

let env: TestEnv;

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
    .values({ enterprise_number: '0367', phone: '+375290000001', text: 'turns', status: 'success', provider_ref: `u${randomBytes(6).toString('hex')}`, callback_url: 'http://crm.test/x' })
    .returning('id')
    .executeTakeFirstOrThrow();
  return Number(row.id);
}

function event(messageId: number, type: string): NewCallbackEvent {
  return { messageId, type, revision: 0, webhookId: `msg_${randomBytes(8).toString('hex')}`, url: 'http://crm.test/x', body: '{}', createdAt: new Date() };
}

/** Whether the promise is still unsettled after `ms`: it waits on a lock. */
async function stillWaiting(promise: Promise<unknown>, ms = 300): Promise<boolean> {
  return Promise.race([promise.then(() => false), new Promise<boolean>((resolve) => setTimeout(() => resolve(true), ms))]);
}

describe('an event raised while the one before it is being finished', () => {
  it('is its message’s head when the finish wrote first: the raise waits for that commit and sees it', async () => {
    const id = await message();
    const first = (await insertEvent(env.db, event(id, 'message.sent')))!;
    expect(first.head).toBe(true);

    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let finishWritten!: () => void;
    const written = new Promise<void>((resolve) => (finishWritten = resolve));
    const finishing = env.db.transaction().execute(async (trx) => {
      expect(await recordDelivered(trx, first.id, { httpStatus: 200, error: null })).toBe(true);
      finishWritten();
      await released;
    });
    await written;
    const raising = insertEvent(env.db, event(id, 'message.delivered'));
    const waited = await stillWaiting(raising);
    release();
    await finishing;
    expect(waited).toBe(true);
    const second = await raising;
    expect(second).toMatchObject({ head: true });
  });

  it('is found by the finish when the raise locked first: the finish waits for the raise, then looks', async () => {
    const id = await message();
    const first = (await insertEvent(env.db, event(id, 'message.sent')))!;

    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let raised!: (value: { id: number; head: boolean } | undefined) => void;
    const raisedEvent = new Promise<{ id: number; head: boolean } | undefined>((resolve) => (raised = resolve));
    const raising = env.db.transaction().execute(async (trx) => {
      raised(await insertEvent(trx, event(id, 'message.delivered')));
      await released;
    });
    const second = (await raisedEvent)!;
    const finishing = recordDelivered(env.db, first.id, { httpStatus: 200, error: null });
    const waited = await stillWaiting(finishing);
    release();
    await raising;
    // The first event was pending when the raise looked: not the second's turn yet.
    expect(second.head).toBe(false);
    expect(waited).toBe(true);
    expect(await finishing).toBe(true);
    // The finisher's look, after its write: the raised event is next.
    expect(await findHead(env.db, id)).toBe(second.id);
  });

  it('is decided the same way for each message of a round raised together', async () => {
    const [finishing, waiting, fresh] = [await message(), await message(), await message()];
    const finished = (await insertEvent(env.db, event(finishing, 'message.sent')))!;
    await insertEvent(env.db, event(waiting, 'message.sent'));

    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let finishWritten!: () => void;
    const written = new Promise<void>((resolve) => (finishWritten = resolve));
    const finish = env.db.transaction().execute(async (trx) => {
      await recordDelivered(trx, finished.id, { httpStatus: 200, error: null });
      finishWritten();
      await released;
    });
    await written;
    const raising = insertEvents(env.db, [event(fresh, 'message.delivered'), event(waiting, 'message.delivered'), event(finishing, 'message.delivered')]);
    const waited = await stillWaiting(raising);
    release();
    await finish;
    const raised = await raising;
    expect(waited).toBe(true);
    expect(Object.fromEntries(raised.map((r) => [r.messageId, r.head]))).toEqual({ [fresh]: true, [waiting]: false, [finishing]: true });
    // Raised again (a round that runs twice): nothing new.
    expect(await insertEvents(env.db, [{ ...event(fresh, 'message.delivered'), webhookId: 'msg_again' }])).toEqual([]);
  });

  it('raises a change once: the same change again records nothing and settles nothing twice', async () => {
    const id = await message();
    const raise = event(id, 'message.sent');
    expect(await insertEvent(env.db, raise)).toMatchObject({ head: true });
    expect(await insertEvent(env.db, { ...raise, webhookId: `msg_${randomBytes(8).toString('hex')}` })).toBeUndefined();
  });
});
