import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCallbackDispatcher, type CallbackDispatcher } from '../../src/callbacks/callback-dispatcher.ts';
import { insertEvent, type NewCallbackEvent } from '../../src/callbacks/callback-repository.ts';
import { parseAllowedHosts } from '../../src/callbacks/callback-hosts.ts';
import { createCallbackSender, type CallbackSender } from '../../src/callbacks/callback-sender.ts';
import { emitMessageEvent, emitMessageEvents } from '../../src/callbacks/emit-message-event.ts';
import { Receiver } from '../support/callback-receiver.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, type TestEnv } from '../support/context.ts';

// The dispatcher's own loop against real PostgreSQL and a real receiver: what one pass claims,
// attempts and records, and an event raised leased to it attempted with no claim at all.

const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const receiver = new Receiver(SECRET);
let env: TestEnv;
let sender: CallbackSender;
const OPTIONS = { concurrency: 4, intervalMs: 60_000, leaseMs: 60_000, retryBackoffMs: 100, retryForS: 3_600 };

beforeAll(async () => {
  await receiver.start();
  env = await createTestEnv();
  await env.seedEnterprise({ number: '0367', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  sender = createCallbackSender({ allowedHosts: parseAllowedHosts('127.0.0.1'), signingSecret: SECRET, timeoutMs: 5_000 });
});
afterAll(async () => {
  sender?.close();
  await env?.cleanup();
  await receiver.stop();
});

function dispatcher(options: Partial<typeof OPTIONS> & { localWaitMs?: number } = {}, via: CallbackSender = sender): CallbackDispatcher {
  return createCallbackDispatcher({ db: env.db, logger: env.logger, deliver: (event) => via.deliver(event) }, { ...OPTIONS, ...options });
}

/** A message's change as a raiser hands it over: the message as the change left it. */
function change(id: number, path: string) {
  const message = {
    id, enterpriseNumber: '0367', status: 'success', deliveryStatus: 'pending', websmsMessageId: 1, customId: null, price: null, parts: null,
    amount: null, error: null, sentAt: new Date(), deliveredAt: null, callbackUrl: receiver.url(path), revision: 1,
  };
  return { type: 'message.sent' as const, message };
}

async function message(path: string): Promise<number> {
  const row = await env.db
    .insertInto('user_sms_send')
    .values({ enterprise_number: '0367', phone: '+375290000001', text: 'dispatch', status: 'success', provider_ref: `u${randomBytes(6).toString('hex')}`, callback_url: receiver.url(path) })
    .returning('id')
    .executeTakeFirstOrThrow();
  return Number(row.id);
}

function event(messageId: number, path: string, type: string): NewCallbackEvent {
  return { messageId, type, revision: 0, webhookId: `msg_${randomBytes(8).toString('hex')}`, url: receiver.url(path), body: JSON.stringify({ type }), createdAt: new Date() };
}

/** The test database, counting the statements it sends whose text contains `fragment`. */
function counting(fragment: string): { db: typeof env.db; count: () => number } {
  let count = 0;
  const db = env.db.withPlugin({
    transformQuery: (args) => {
      if (args.node.kind === 'RawNode' && args.node.sqlFragments.join('?').includes(fragment)) count += 1;
      return args.node;
    },
    transformResult: (args) => Promise.resolve(args.result),
  });
  return { db, count: () => count };
}

async function rows(messageId: number) {
  return (await sql<{ id: string; type: string; status: string; attempts: number; last_http_status: number | null; next_attempt_at: Date; created_at: Date }>`
    SELECT id, type, status, attempts, last_http_status, next_attempt_at, created_at FROM callback_events WHERE message_id = ${String(messageId)} ORDER BY id`.execute(env.db)).rows;
}

describe('the callback dispatcher', () => {
  it("attempts and records every due head in one pass, and a message's next event in the next", async () => {
    const d = dispatcher();
    const [a, b] = [await message('/a'), await message('/b')];
    for (const [id, path] of [[a, '/a'], [b, '/b']] as const) {
      await insertEvent(env.db, event(id, path, 'message.sent'));
      await insertEvent(env.db, event(id, path, 'message.delivered'));
    }
    expect(await d.runOnce()).toBe(2);
    expect((await rows(a)).map((r) => r.status)).toEqual(['delivered', 'pending']);
    expect((await rows(b)).map((r) => r.status)).toEqual(['delivered', 'pending']);
    expect(await d.runOnce()).toBe(2);
    expect(await d.runOnce()).toBe(0);
    for (const [id, path] of [[a, '/a'], [b, '/b']] as const) {
      expect((await rows(id)).map((r) => [r.status, r.attempts, r.last_http_status])).toEqual([['delivered', 1, 204], ['delivered', 1, 204]]);
      expect(receiver.at(path).map((r) => (JSON.parse(r.body) as { type: string }).type)).toEqual(['message.sent', 'message.delivered']);
      expect(receiver.at(path).every((r) => r.verified)).toBe(true);
    }
  });

  it('records attempts that end while another is under way together, in one statement, once the last has ended', async () => {
    // The statements that record attempts (callback-repository.ts recordAttempts).
    const records = counting('last_http_status = r.http_status');
    let openGate: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    // The last event's attempt ends only when the test says so; the others' end as they are answered.
    const d = createCallbackDispatcher(
      { db: records.db, logger: env.logger, deliver: async (e) => {
        const result = await sender.deliver(e);
        if (e.url.endsWith('/gather-last')) await gate;
        return result;
      } },
      { ...OPTIONS, recordDelayMs: 60_000 },
    );
    const paths = ['/gather-1', '/gather-2', '/gather-last'];
    const ids: number[] = [];
    for (const path of paths) {
      const id = await message(path);
      ids.push(id);
      await insertEvent(env.db, event(id, path, 'message.sent'));
    }
    const pass = d.runOnce();
    await eventually(() => (paths.every((path) => receiver.at(path).length === 1) ? true : undefined));
    // Both others answered, the last attempt still under way: nothing recorded yet.
    expect((await Promise.all(ids.map(rows))).map(([r]) => r?.status)).toEqual(['pending', 'pending', 'pending']);
    openGate();
    expect(await pass).toBe(3);
    expect((await Promise.all(ids.map(rows))).map(([r]) => r?.status)).toEqual(['delivered', 'delivered', 'delivered']);
    expect(records.count()).toBe(1);
  });

  it('keeps a failed attempt for its retry, and gives the event up once its window is over', async () => {
    const d = dispatcher();
    receiver.setAlways('/down', 'fail500');
    const id = await message('/down');
    await insertEvent(env.db, event(id, '/down', 'message.sent'));
    const before = Date.now();
    expect(await d.runOnce()).toBe(1);
    const [failed] = await rows(id);
    expect(failed).toMatchObject({ status: 'pending', attempts: 1, last_http_status: 500 });
    expect(failed!.next_attempt_at.getTime()).toBeGreaterThanOrEqual(before + OPTIONS.retryBackoffMs - 50);

    // Its retry window ends now: the next attempt is the last.
    await sql`UPDATE callback_events SET window_start_at = now() - interval '2 hours', next_attempt_at = now() WHERE message_id = ${String(id)}`.execute(env.db);
    expect(await d.runOnce()).toBe(1);
    expect((await rows(id)).map((r) => [r.status, r.attempts])).toEqual([['given_up', 2]]);
    receiver.setAlways('/down', undefined);
  });

  it('attempts an event raised leased to it at once, without claiming it', async () => {
    const d = dispatcher();
    d.start();
    try {
      const id = await message('/own');
      const snapshot = {
        id, enterpriseNumber: '0367', status: 'success', deliveryStatus: 'pending', websmsMessageId: 1, customId: null, price: null, parts: null,
        amount: null, error: null, sentAt: new Date(), deliveredAt: null, callbackUrl: receiver.url('/own'), revision: 1,
      };
      expect(await emitMessageEvent({ db: env.db, logger: env.logger, dispatch: d }, id, 'message.sent', snapshot)).toMatchObject({ kind: 'recorded' });
      // Raised leased to this process (due only when the lease ends), and delivered well before: by the
      // raiser itself (the dispatcher's next look is a minute away).
      const [raised] = await rows(id);
      expect(raised!.next_attempt_at.getTime()).toBeGreaterThan(raised!.created_at.getTime() + 30_000);
      await eventually(async () => ((await rows(id))[0]?.status === 'delivered' ? true : undefined));
      expect(receiver.at('/own')).toHaveLength(1);
    } finally {
      await d.stop();
    }
  });

  it('takes a whole raised batch leased to it, more than its attempt slots, and attempts the rest as slots free, with no claim', async () => {
    const d = dispatcher(); // 4 slots, and its next look for due events a minute away
    d.start();
    try {
      const ids: number[] = [];
      for (let i = 0; i < 10; i++) ids.push(await message(`/batch${i}`));
      expect(await emitMessageEvents({ db: env.db, logger: env.logger, dispatch: d }, ids.map((id, i) => change(id, `/batch${i}`)))).toBe(10);
      // Every one leased to this process, none left due for a claim: the four that had a slot for an
      // attempt's lease (a minute), the six that wait for one for as long again as they may wait (30 s).
      const leases = await Promise.all(ids.map(async (id) => {
        const [raised] = await rows(id);
        return raised!.next_attempt_at.getTime() - raised!.created_at.getTime();
      }));
      expect(leases.filter((ms) => ms > 55_000 && ms < 75_000)).toHaveLength(4);
      expect(leases.filter((ms) => ms > 85_000 && ms < 105_000)).toHaveLength(6);
      await eventually(async () => ((await Promise.all(ids.map(rows))).every(([r]) => r?.status === 'delivered') ? true : undefined));
      ids.forEach((_, i) => expect(receiver.at(`/batch${i}`)).toHaveLength(1));
    } finally {
      await d.stop();
    }
  });

  it('keeps the slot it promised an event leased for an attempt, even when one leased for the wait is handed over first', async () => {
    // The statements that give leases back (callback-repository.ts releaseLeases).
    const givenBack = counting('next_attempt_at > now()');
    const d = createCallbackDispatcher({ db: givenBack.db, logger: env.logger, deliver: (e) => sender.deliver(e) }, { ...OPTIONS, concurrency: 1 });
    d.start();
    try {
      // One slot: the first event is leased for an attempt, the second for the wait as well.
      const leases = d.reserve(2);
      expect(leases).toEqual([OPTIONS.leaseMs, OPTIONS.leaseMs + 30_000]);
      const raised: Array<{ id: number; messageId: number; path: string; leaseMs: number }> = [];
      for (const [i, path] of ['/promised', '/queued'].entries()) {
        const messageId = await message(path);
        const row = await insertEvent(env.db, event(messageId, path, 'message.sent'), { claimForMs: leases[i] });
        raised.push({ id: row!.id, messageId, path, leaseMs: leases[i]! });
      }
      // A raiser hands its events over in the order its insert returned them, not the order of the leases.
      for (const r of [...raised].reverse()) {
        d.adopt({ ...event(r.messageId, r.path, 'message.sent'), id: r.id, status: 'pending', attempts: 0, windowStartAt: new Date(), nextAttemptAt: new Date(), lastAttemptAt: null, lastError: null, lastHttpStatus: null, finishedAt: null }, r.leaseMs);
      }
      await eventually(async () => ((await Promise.all(raised.map((r) => rows(r.messageId)))).every(([row]) => row?.status === 'delivered') ? true : undefined));
      // Each attempted once, by this process, the promised one first: no lease was given back.
      expect(receiver.at('/promised')).toHaveLength(1);
      expect(receiver.at('/queued')).toHaveLength(1);
      expect(receiver.at('/promised')[0]!.at).toBeLessThanOrEqual(receiver.at('/queued')[0]!.at);
      expect(givenBack.count()).toBe(0);
    } finally {
      await d.stop();
    }
  });

  it('gives back the lease of a raised event that waited too long for a slot: it is claimed and delivered', async () => {
    const quick = createCallbackSender({ allowedHosts: parseAllowedHosts('127.0.0.1'), signingSecret: SECRET, timeoutMs: 300 });
    const d = dispatcher({ concurrency: 1, localWaitMs: 100 }, quick);
    receiver.setAlways('/stuck', 'hang');
    d.start();
    try {
      const [stuck, behind] = [await message('/stuck'), await message('/behind')];
      await emitMessageEvents({ db: env.db, logger: env.logger, dispatch: d }, [change(stuck, '/stuck'), change(behind, '/behind')]);
      // The one slot is the hanging receiver's until its timeout; the event behind it gives its lease back
      // then and is claimed (the dispatcher's own look is a minute away).
      await eventually(async () => ((await rows(behind))[0]?.status === 'delivered' ? true : undefined));
      expect(receiver.at('/behind')).toHaveLength(1);
      expect((await rows(stuck)).map((r) => [r.status, r.attempts])).toEqual([['pending', 1]]);
      expect(env.logLines().some((line) => line.includes('waited too long for an attempt slot'))).toBe(true);
    } finally {
      await d.stop();
      quick.close();
      receiver.setAlways('/stuck', undefined);
    }
  });

  it('gives back the leases of raised events still waiting for a slot when it stops', async () => {
    const quick = createCallbackSender({ allowedHosts: parseAllowedHosts('127.0.0.1'), signingSecret: SECRET, timeoutMs: 300 });
    const d = dispatcher({ concurrency: 1 }, quick);
    receiver.setAlways('/held', 'hang');
    d.start();
    try {
      const [held, waiting] = [await message('/held'), await message('/waiting')];
      await emitMessageEvents({ db: env.db, logger: env.logger, dispatch: d }, [change(held, '/held'), change(waiting, '/waiting')]);
      await d.stop();
      // The attempt under way ended and was recorded; the waiting event is due now, never attempted.
      expect((await rows(held)).map((r) => [r.status, r.attempts])).toEqual([['pending', 1]]);
      const [due] = await rows(waiting);
      expect(due).toMatchObject({ status: 'pending', attempts: 0 });
      const { now } = (await sql<{ now: Date }>`SELECT now() AS now`.execute(env.db)).rows[0]!;
      expect(due!.next_attempt_at.getTime()).toBeLessThanOrEqual(now.getTime());
      expect(receiver.at('/waiting')).toHaveLength(0);
    } finally {
      await d.stop();
      quick.close();
      receiver.setAlways('/held', undefined);
    }
  });
});
