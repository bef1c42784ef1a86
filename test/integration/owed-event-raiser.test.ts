import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callbackEmitPorts } from '../../src/callbacks/callback-delivery.ts';
import { raiseOwedEvents } from '../../src/callbacks/emit-message-event.ts';
import { createOwedEventRaiser } from '../../src/callbacks/owed-event-raiser.ts';
import { createDb, type Db } from '../../src/db/database.ts';
import { recordAccepted } from '../../src/messages/repository.ts';
import { createTestEnv, eventually, type TestEnv } from '../support/context.ts';

// A send's outcome (and any other change of a message with a callback_url) leaves its event owed in
// the same statement; the background work raises what is owed in batches. Here the changes are made
// as the send worker and the delivery poller make them, and the raiser is run by hand.

let env: TestEnv;

beforeAll(async () => {
  env = await createTestEnv();
});
afterAll(async () => {
  await env?.cleanup();
});

function raiserOn(db: Db, batchSize?: number) {
  return createOwedEventRaiser(
    { db, logger: env.logger, raise: (owed) => raiseOwedEvents(callbackEmitPorts(db, env.logger), owed) },
    { intervalMs: 50, ...(batchSize === undefined ? {} : { batchSize }) },
  );
}

/** A message accepted by WebSMS, recorded as the send worker records it. */
async function accepted(callbackUrl: string | null): Promise<number> {
  const row = await env.db
    .insertInto('user_sms_send')
    .values({ enterprise_number: '0367', phone: '+375290000001', text: 'raise', status: 'sending', provider_ref: `u${randomBytes(6).toString('hex')}`, callback_url: callbackUrl })
    .returning('id')
    .executeTakeFirstOrThrow();
  const id = Number(row.id);
  expect(await recordAccepted(env.db, id, { websmsMessageId: 880000 + id, price: 0.05, parts: 1, amount: 0.05, response: { status: true } })).toBe(true);
  return id;
}

async function eventsOf(ids: number[]) {
  return (await sql<{ message_id: string; type: string; created_at: Date; body: string }>`
    SELECT message_id, type, created_at, body FROM callback_events WHERE message_id = ANY(${ids.map(String)}::bigint[]) ORDER BY id`.execute(env.db)).rows;
}

async function owedOf(ids: number[]) {
  return (await sql<{ message_id: string; type: string }>`
    SELECT message_id, type FROM callback_owed WHERE message_id = ANY(${ids.map(String)}::bigint[]) ORDER BY message_id, type`.execute(env.db)).rows;
}

describe('raising owed callback events', () => {
  it('raises what send outcomes left owed, a batch per statement, and nothing for a message without a callback_url', async () => {
    const ids: number[] = [];
    for (let i = 0; i < 5; i++) ids.push(await accepted('http://127.0.0.1:9/hook'));
    const without = await accepted(null);
    // The outcome wrote the marker and nothing else: no event until the raiser runs.
    expect(await owedOf([...ids, without])).toHaveLength(5);
    expect(await eventsOf(ids)).toEqual([]);

    expect(await raiserOn(env.db, 2).raiseOwed()).toBe(5);
    const events = await eventsOf([...ids, without]);
    expect(events.map((e) => [Number(e.message_id), e.type])).toEqual(ids.map((id) => [id, 'message.sent']));
    // Batches of two, one statement each: three instants.
    expect(new Set(events.map((e) => e.created_at.getTime())).size).toBe(3);
    expect(JSON.parse(events[0]!.body)).toMatchObject({ type: 'message.sent', data: { id: ids[0], status: 'success', message_id: 880000 + ids[0]!, delivery_status: 'pending' } });
    expect(await owedOf(ids)).toEqual([]);
    expect(await raiserOn(env.db).raiseOwed()).toBe(0);
  });

  it("raises a message's later event after its earlier one", async () => {
    const id = await accepted('http://127.0.0.1:9/hook');
    // The delivery poller's change before anything was raised: both owed.
    await sql`UPDATE user_sms_send SET delivery_status = 'delivered', delivery_code = 3, delivered_at = now() WHERE id = ${String(id)}`.execute(env.db);
    expect((await owedOf([id])).map((o) => o.type)).toEqual(['message.delivered', 'message.sent']);

    expect(await raiserOn(env.db).raiseOwed()).toBe(2);
    expect((await eventsOf([id])).map((e) => e.type)).toEqual(['message.sent', 'message.delivered']);
    expect(await owedOf([id])).toEqual([]);
  });

  it('forgets a change the message has moved on from: its later change is owed in its own right', async () => {
    const id = await accepted('http://127.0.0.1:9/hook');
    // An operator's action since: a new revision of the message, whose own changes raise their own events.
    await sql`UPDATE user_sms_send SET operator_actions = operator_actions || '[{"action":"note"}]'::jsonb WHERE id = ${String(id)}`.execute(env.db);

    expect(await raiserOn(env.db).raiseOwed()).toBe(0);
    expect(await eventsOf([id])).toEqual([]);
    expect(await owedOf([id])).toEqual([]);
  });

  it('leaves the events owed when PostgreSQL refuses them, says so, and raises them once it answers', async () => {
    const ids = [await accepted('http://127.0.0.1:9/hook'), await accepted('http://127.0.0.1:9/hook')];
    // A database nobody answers on: every statement fails.
    const unreachable = createDb('postgresql://postgres@127.0.0.1:9/none', { connectionTimeoutMs: 500 });
    const failing = raiserOn(unreachable);
    try {
      await expect(failing.raiseOwed()).rejects.toThrow();
      failing.start();
      await eventually(() => env.logLines().find((line) => line.includes('owed callback events not raised; will try again')), 10_000);
    } finally {
      await failing.stop();
      await unreachable.destroy();
    }
    expect(await eventsOf(ids)).toEqual([]);
    expect((await owedOf(ids)).map((o) => Number(o.message_id))).toEqual(ids);

    const raiser = raiserOn(env.db);
    raiser.start();
    try {
      await eventually(async () => ((await eventsOf(ids)).length === 2 ? true : undefined), 10_000);
    } finally {
      await raiser.stop();
    }
    expect(await owedOf(ids)).toEqual([]);
  });
});
