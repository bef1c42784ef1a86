import { sql } from 'kysely';
import { beforeAll, describe, expect, it } from 'vitest';
import { acceptedFor, cleanUpAfterAll, createHarness, waitFor, type Harness } from './harness.ts';

// The answer to a message's insert is lost on its way back: PostgreSQL stored the row, the API never
// hears so. Made with a TCP proxy in front of the shared server that holds every answer on the one
// connection that sent the insert (or, under a daily cap, the COMMIT of its transaction), from that
// statement on. pg gives up after its read timeout (statement timeout 10 s + 1 s).
//
// Before, the API answered 503 "nothing was sent" while the row it had stored was sent by the sweeper
// minutes later: a caller retrying the 503 would send the message twice. Now the API looks the row up
// by its provider_ref once the insert can no longer be running, finds it, and carries on: the caller
// gets the message's outcome, and WebSMS gets it once.

const INSERT = 'insert into "user_sms_send"';

describe.each<{ name: string; env: Record<string, string>; then: string | undefined }>([
  { name: 'the insert', env: {}, then: undefined },
  { name: 'the COMMIT of the insert under a daily cap', env: { DAILY_CAP_PER_ENTERPRISE: '100' }, then: 'commit' },
])('the answer to $name is lost', ({ env, then }) => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness({ scenario: 'lost insert answer', postgresProxy: true, enterprises: 1, env: { SEND_WAIT_MS: '5000', ...env } });
    await Promise.all([h.startApi(), h.startWorker()]);
  });

  cleanUpAfterAll(() => h);

  it('the caller gets the message outcome, not an untrue "nothing was sent", and WebSMS gets it once', async () => {
    const held = h.postgresProxy!.holdRepliesAfter(INSERT, then === undefined ? {} : { then });
    const answer = h.send({ timeoutMs: 40_000 });
    await held;
    const result = await answer;

    expect(result.status, `answered ${result.status} "${String(result.json.error)}"`).toBe(200);
    expect(result.json.success).toBe(true);
    const rows = (await h.rows()).filter((row) => row.text === result.text);
    expect(rows).toHaveLength(1);
    expect(result.json.id).toBe(Number(rows[0]!.id));
    expect(rows[0]!.status).toBe('success');
    expect(acceptedFor(h.sandbox.calls(), rows[0]!)).toHaveLength(1);
    expect(h.logs().some((line) => line.includes('the row was found by its provider_ref'))).toBe(true);
  });
});

describe('the answer to the insert is lost and PostgreSQL is gone when the API would look', () => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness({ scenario: 'lost insert answer, then outage', postgresProxy: true, enterprises: 1, env: { SEND_WAIT_MS: '5000' } });
    await Promise.all([h.startApi(), h.startWorker()]);
  });

  cleanUpAfterAll(() => h);

  it('the caller is told the outcome is unknown, never "nothing was sent", and the stored message is sent once', async () => {
    const held = h.postgresProxy!.holdRepliesAfter(INSERT);
    const answer = h.send({ timeoutMs: 40_000 });
    await held;
    // Cut only once the row is committed: a reset could otherwise drop the insert before PostgreSQL read it.
    await waitFor('the row committed', 10_000, async () => ((await h.rows()).length === 1 ? true : undefined));
    h.postgresProxy!.down();
    const result = await answer;
    h.postgresProxy!.open();

    expect(result.status).toBe(503);
    expect(result.json.status).toBe('unknown');
    expect(String(result.json.error)).toContain('may have been stored');
    expect(String(result.json.error)).not.toContain('nothing was sent');
    // As it said: stored, so it is sent (by the sweeper), once.
    const [row] = await h.waitAllFinal(60_000);
    expect(row!.text).toBe(result.text);
    expect(row!.status).toBe('success');
    expect(acceptedFor(h.sandbox.calls(), row!)).toHaveLength(1);
  });
});

describe('the connection is reset while the insert waits inside PostgreSQL', () => {
  let h: Harness;

  beforeAll(async () => {
    h = await createHarness({ scenario: 'insert reset while running', postgresProxy: true, enterprises: 1, env: { SEND_WAIT_MS: '5000' } });
    await Promise.all([h.startApi(), h.startWorker()]);
  });

  cleanUpAfterAll(() => h);

  it('the API ends the statement it lost and answers at once, truthfully: nothing was sent, and nothing is', async () => {
    // The insert is held up inside PostgreSQL by a lock this test holds, so it is still running when
    // its connection is reset: the reset alone does not stop it.
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    let locked!: () => void;
    const isLocked = new Promise<void>((resolve) => (locked = resolve));
    const holder = h.db.transaction().execute(async (trx) => {
      await sql`LOCK TABLE user_sms_send IN SHARE MODE`.execute(trx);
      locked();
      await released;
    });
    await isLocked;

    let result: Awaited<ReturnType<Harness['send']>>;
    try {
      const sending = h.postgresProxy!.connectionSending(INSERT);
      // A budget below statement timeout + 1 s (11 s): an API that waited for the statement to time out
      // instead of ending it would not answer within it.
      const answer = h.send({ timeoutMs: 8_000 });
      const connection = await sending;
      const pid = await waitFor('the insert waiting for the lock', 10_000, async () => {
        const { rows } = await sql<{ pid: number }>`
          SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE ${`%${INSERT}%`} AND pid <> pg_backend_pid()`.execute(h.db);
        return rows[0]?.pid;
      });
      connection.reset();
      result = await answer;
      // Ended before the answer, so it can never commit.
      expect((await sql`SELECT 1 FROM pg_stat_activity WHERE pid = ${pid}`.execute(h.db)).rows).toEqual([]);
    } finally {
      release();
      await holder;
    }

    expect(result.status, `answered ${result.status} "${result.error ?? String(result.json.error)}"`).toBe(503);
    expect(String(result.json.error)).toContain('nothing was sent');
    expect((await h.rows()).filter((row) => row.text === result.text)).toEqual([]);
    expect(h.sandbox.calls().filter((call) => call.endpoint === 'send/sms')).toEqual([]);
  });
});
