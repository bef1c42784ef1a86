import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Receiver } from '../support/callback-receiver.ts';
import { cleanUpAfterAll, createHarness, deliveryViolations, waitFor, type Harness, type SendResult } from './harness.ts';

// `kill -9` a worker process while it holds callbacks open: every receiver's first request hangs, the
// worker dies with them in flight. Once the dead worker's leases end (the attempt timeout + 10 s),
// another worker delivers each event, with the webhook-id of the first attempt (receivers drop
// duplicates by it); no event is lost, and no SMS is sent again or held up: callbacks are not the
// send path.

const SECRET = `whsec_${randomBytes(32).toString('base64')}`;
const MESSAGES = 6;

describe('a worker killed mid-callback: every event is delivered by another worker, with its webhook-id, and no SMS is sent twice', () => {
  let h: Harness;
  const receiver = new Receiver(SECRET);

  beforeAll(async () => {
    await receiver.start();
    h = await createHarness({
      scenario: 'callback kill',
      env: {
        CALLBACK_ALLOWED_HOSTS: '127.0.0.1',
        CALLBACK_SIGNING_SECRET: SECRET,
        // Long enough that the doomed worker is killed while every callback is still open.
        CALLBACK_TIMEOUT_MS: '60000',
        CALLBACK_RETRY_BACKOFF_MS: '200',
      },
    });
  });

  cleanUpAfterAll(() => h);
  afterAll(() => receiver.stop());

  it('delivers every event after the kill, each with the webhook-id of its first attempt', async () => {
    await h.startApi();
    const doomed = await h.startWorker();
    for (let i = 0; i < MESSAGES; i++) receiver.setAlways(`/cb/${i}`, 'hang');

    const answers: SendResult[] = [];
    for (let i = 0; i < MESSAGES; i++) answers.push(await h.send({ enterprise: h.enterprises[i % h.enterprises.length]!, callbackUrl: receiver.url(`/cb/${i}`), wait: false }));
    expect(answers.map((a) => a.status)).toEqual(Array<number>(MESSAGES).fill(202));
    await waitFor('every first callback to be held open by the receiver', 60_000, () => (receiver.received.length >= MESSAGES ? true : undefined));
    const firstIds = new Map(receiver.received.map((r) => [r.path, r.headers['webhook-id']]));

    expect(await doomed.kill9()).toBe('SIGKILL');
    for (let i = 0; i < MESSAGES; i++) receiver.setAlways(`/cb/${i}`, 'ok');
    await h.startWorker();
    // Sends go on while the dead worker's callbacks wait for their leases to end.
    const later = await h.send({ enterprise: h.enterprises[0]! });
    expect(later.status).toBe(200);

    // Lease: CALLBACK_TIMEOUT_MS (60 s) + 10 s, then the next look (200 ms).
    const ids = answers.map((a) => String(a.json.id));
    await waitFor('every message.sent event delivered', 110_000, async () => {
      const result = await sql<{ n: string }>`
        SELECT count(*) AS n FROM callback_events WHERE type = 'message.sent' AND status = 'delivered' AND message_id = ANY(${ids}::bigint[])`.execute(h.db);
      return Number(result.rows[0]?.n) === MESSAGES ? true : undefined;
    });
    const typeOf = (body: string) => (JSON.parse(body) as { type: string }).type;
    for (let i = 0; i < MESSAGES; i++) {
      const path = `/cb/${i}`;
      expect(receiver.at(path).every((r) => r.verified)).toBe(true);
      const sent = receiver.at(path).filter((r) => typeOf(r.body) === 'message.sent');
      expect(sent.filter((r) => r.answered === 'ok'), `${path} delivered once`).toHaveLength(1);
      expect(new Set(sent.map((r) => r.headers['webhook-id'])), `${path} one webhook-id throughout`).toEqual(new Set([firstIds.get(path)]));
      // The sandbox delivers every SMS: its message.delivered follows, never before message.sent.
      expect(typeOf(receiver.at(path).find((r) => r.answered === 'ok')!.body)).toBe('message.sent');
    }

    const rows = await h.waitAllFinal(30_000);
    expect(rows.every((r) => r.status === 'success')).toBe(true);
    expect(deliveryViolations(rows, h.sandbox.calls(), h.enterprises)).toEqual([]);
  });
});
