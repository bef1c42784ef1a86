import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deliverMessage } from '../../src/messages/deliver.ts';
import { insertPendingMessage } from '../../src/messages/repository.ts';
import { createEnterpriseLine, type EnterpriseLine } from '../../src/line/enterprise-line.ts';
import { createWebsmsClient } from '../../src/websms/client.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, type TestEnv } from '../support/context.ts';

// One send, driven directly against the real PostgreSQL, Redis line and WebSMS sandbox, with the end of
// its turn held back at a gate: what the send does after its WebSMS call, and in which order.

describe("a send's turn and its outcome, after the WebSMS call", () => {
  let env: TestEnv;

  beforeAll(async () => {
    env = await createTestEnv();
    await env.seedEnterprise({ number: '0367', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  });
  afterAll(async () => {
    await env?.cleanup();
  });

  it('records the outcome while its turn is still being ended, and ends the run only once the turn has ended', async () => {
    const real = createEnterpriseLine(env.redis, { keyPrefix: `{test:deliver-turn:${randomUUID()}}`, limit: 3, windowMs: 60_000, turnTtlMs: 30_000 });
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    const turn = { ending: false, ended: false };
    const line: EnterpriseLine = {
      ...real,
      async finish(enterprise, messageId) {
        turn.ending = true;
        await gate;
        const next = await real.finish(enterprise, messageId);
        turn.ended = true;
        return next;
      },
    };
    const websms = createWebsmsClient({ baseUrl: env.config.websms.baseUrl, timeoutMs: 5_000, method: env.config.websms.method });
    const id = await insertPendingMessage(env.db, {
      enterpriseNumber: '0367',
      enterpriseName: null,
      phone: '+375296254070',
      text: 'turn and outcome',
      sender: null,
      customId: null,
      serviceName: null,
      requestIp: null,
      userAgent: null,
    });
    await real.join('0367', id);

    const run = deliverMessage(
      {
        db: env.db,
        websms,
        line: { db: env.db, logger: env.logger, line, wake: () => Promise.resolve('missing' as const), enqueue: () => Promise.resolve(), backstopMs: 1_000 },
        logger: env.logger,
        defaultSender: 'june',
        websmsTimeoutMs: 5_000,
      },
      { messageId: id, enterpriseNumber: '0367', lastAttempt: true, firstRun: true, stashAcceptance: () => Promise.resolve() },
    );

    // Recorded while the turn's end is held at the gate: the two are made at once, not one after the other.
    await eventually(async () => {
      const row = await env.db.selectFrom('user_sms_send').select('status').where('id', '=', String(id)).executeTakeFirst();
      return row?.status === 'success' ? row : undefined;
    });
    expect(turn).toEqual({ ending: true, ended: false });
    expect(await real.standing('0367', id)).toMatchObject({ kind: 'sending' });

    openGate();
    const step = await run;
    expect(step).toMatchObject({ kind: 'finished', outcome: { status: 'success' } });
    // The run ends after the turn: a retry or the line's next run never finds this turn still open.
    expect(turn.ended).toBe(true);
    expect(await real.standing('0367', id)).toMatchObject({ kind: 'absent' });
    websms.close();
  });
});
