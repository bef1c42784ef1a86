import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callbackEmitPorts } from '../../src/callbacks/callback-delivery.ts';
import { createEventRaiser } from '../../src/callbacks/event-raiser.ts';
import { createDb } from '../../src/db/database.ts';
import { recordAccepted } from '../../src/messages/repository.ts';
import { createTestEnv, type TestEnv } from '../support/context.ts';

// The events of send outcomes are raised after the send job completes, the outcomes that finish
// together in one statement. What is never raised stays owed: the callback sweeper's to raise.

let env: TestEnv;

beforeAll(async () => {
  env = await createTestEnv();
});
afterAll(async () => {
  await env?.cleanup();
});

/** A message accepted by WebSMS, as the send worker records it: returns it as its event describes it. */
async function accepted(callbackUrl: string | null) {
  const row = await env.db
    .insertInto('user_sms_send')
    .values({ enterprise_number: '0367', phone: '+375290000001', text: 'raise', status: 'sending', provider_ref: `u${randomBytes(6).toString('hex')}`, callback_url: callbackUrl })
    .returning('id')
    .executeTakeFirstOrThrow();
  const recorded = await recordAccepted(env.db, Number(row.id), { websmsMessageId: 880000 + Number(row.id), price: 0.05, parts: 1, amount: 0.05, response: { status: true } });
  return { id: Number(row.id), changed: recorded!.changed };
}

async function eventsOf(ids: number[]) {
  return (await sql<{ message_id: string; type: string; created_at: Date; body: string }>`
    SELECT message_id, type, created_at, body FROM callback_events WHERE message_id = ANY(${ids.map(String)}::bigint[]) ORDER BY id`.execute(env.db)).rows;
}

async function owedOf(ids: number[]) {
  return (await sql<{ message_id: string; type: string }>`
    SELECT message_id, type FROM callback_owed WHERE message_id = ANY(${ids.map(String)}::bigint[]) ORDER BY message_id`.execute(env.db)).rows;
}

describe('raising send events off the send path', () => {
  it('raises nothing while the outcomes are handed over, then the ones that finished together in one statement', async () => {
    const messages = await Promise.all([1, 2, 3, 4, 5].map(() => accepted('http://127.0.0.1:9/hook')));
    const ids = messages.map((m) => m.id).sort((a, b) => a - b);
    const raiser = createEventRaiser(callbackEmitPorts(env.db, env.logger), env.logger, 60_000);
    for (const m of messages) raiser.raise(m.id, 'message.sent', m.changed);
    // Handing over writes nothing: the job completes at once, its event still owed.
    expect(await eventsOf(ids)).toEqual([]);
    expect(await owedOf(ids)).toHaveLength(5);

    await raiser.flush();
    const events = await eventsOf(ids);
    expect(events.map((e) => [Number(e.message_id), e.type])).toEqual(ids.map((id) => [id, 'message.sent']));
    // One statement raised them all: one instant for every event, in its row and in its body.
    expect(new Set(events.map((e) => e.created_at.getTime())).size).toBe(1);
    expect(new Set(events.map((e) => (JSON.parse(e.body) as { timestamp: string }).timestamp)).size).toBe(1);
    expect(await owedOf(ids)).toEqual([]);
  });

  it("raises a message's later event after its earlier one, and nothing for a message without a callback_url", async () => {
    const withUrl = await accepted('http://127.0.0.1:9/hook');
    const without = await accepted(null);
    expect(without.changed).toBeNull();
    const raiser = createEventRaiser(callbackEmitPorts(env.db, env.logger), env.logger);
    raiser.raise(withUrl.id, 'message.sent', withUrl.changed);
    raiser.raise(withUrl.id, 'message.delivered', { ...withUrl.changed!, deliveryStatus: 'delivered', revision: withUrl.changed!.revision });
    raiser.raise(without.id, 'message.sent', without.changed);
    await raiser.flush();
    expect((await eventsOf([withUrl.id, without.id])).map((e) => [Number(e.message_id), e.type])).toEqual([
      [withUrl.id, 'message.sent'],
      [withUrl.id, 'message.delivered'],
    ]);
  });

  it('reads the message when the outcome came without it', async () => {
    const m = await accepted('http://127.0.0.1:9/hook');
    const raiser = createEventRaiser(callbackEmitPorts(env.db, env.logger), env.logger);
    raiser.raise(m.id, 'message.sent');
    await raiser.flush();
    const [event] = await eventsOf([m.id]);
    expect(JSON.parse(event!.body)).toMatchObject({ type: 'message.sent', data: { id: m.id, status: 'success', message_id: 880000 + m.id } });
  });

  it('leaves the events owed, and says so, when PostgreSQL refuses them; never throws', async () => {
    const messages = await Promise.all([1, 2].map(() => accepted('http://127.0.0.1:9/hook')));
    const ids = messages.map((m) => m.id).sort((a, b) => a - b);
    // A database nobody answers on: every statement fails.
    const unreachable = createDb('postgresql://postgres@127.0.0.1:9/none', { connectionTimeoutMs: 500 });
    try {
      const raiser = createEventRaiser(callbackEmitPorts(unreachable, env.logger), env.logger);
      for (const m of messages) raiser.raise(m.id, 'message.sent', m.changed);
      raiser.raise(ids[0]!, 'message.failed');
      await raiser.flush();
    } finally {
      await unreachable.destroy();
    }
    expect(await eventsOf(ids)).toEqual([]);
    expect((await owedOf(ids)).map((o) => [Number(o.message_id), o.type])).toEqual(ids.map((id) => [id, 'message.sent']));
    const warnings = env.logLines().filter((line) => line.includes('callback events not raised now'));
    expect(warnings).toHaveLength(2);
  });
});
