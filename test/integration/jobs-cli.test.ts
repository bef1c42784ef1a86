import { Queue, Worker } from 'bullmq';
import { createRedis } from '../../src/redis-connection.ts';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { insertPendingMessage } from '../../src/messages/repository.ts';
import { jobIdFor, SEND_JOB, SEND_QUEUE, sendJobOptions, type SendJobData } from '../../src/queue/jobs.ts';
import { createWebsmsClient } from '../../src/websms/client.ts';
import { runCli } from '../support/cli.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';

// `npm run jobs` as an operator runs it: its own process, against the queue in Redis and the rows
// in PostgreSQL, while the service's worker runs (or does not), with only WebSMS replaced.

const PHONE = '+375296254070';
const CREDENTIALS = `${DEMO_USER} ${DEMO_KEY}`;

interface Row {
  id: string;
  status: string;
  error_code: string | null;
  error_message: string | null;
  provider_ref: string | null;
  attempts: number;
  resent_after_unknown: boolean;
  operator_actions: Array<Record<string, unknown>>;
}

async function row(env: TestEnv, id: number): Promise<Row> {
  const result = await sql<Row>`
    SELECT id, status, error_code, error_message, provider_ref, attempts, resent_after_unknown, operator_actions
    FROM user_sms_send WHERE id = ${String(id)}`.execute(env.db);
  return result.rows[0]!;
}

async function finalRow(env: TestEnv, id: number): Promise<Row> {
  return eventually(async () => {
    const r = await row(env, id);
    return ['success', 'failed', 'unknown'].includes(r.status) ? r : undefined;
  }, 30_000);
}

async function jobState(env: TestEnv, id: number): Promise<string> {
  const queue = new Queue(SEND_QUEUE, { connection: env.redis, prefix: env.config.queuePrefix });
  try {
    return await queue.getJobState(jobIdFor(id));
  } finally {
    await queue.close();
  }
}

/** How many times a worker has taken the job. */
async function timesTaken(env: TestEnv, id: number): Promise<number> {
  const queue = new Queue(SEND_QUEUE, { connection: env.redis, prefix: env.config.queuePrefix });
  try {
    return (await queue.getJob(jobIdFor(id)))?.attemptsStarted ?? 0;
  } finally {
    await queue.close();
  }
}

function acceptedFor(env: TestEnv, providerRef: string | null) {
  return env.sandbox.acceptedSends().filter((c) => c.customId === providerRef);
}

async function jobsJson(env: TestEnv, ...args: string[]): Promise<Array<Record<string, unknown>>> {
  const result = await runCli(env, 'jobs', ['list', '--json', ...args]);
  expect(result.code, result.stderr).toBe(0);
  return JSON.parse(result.stdout) as Array<Record<string, unknown>>;
}

async function newMessage(env: TestEnv, enterprise = '0367'): Promise<number> {
  return insertPendingMessage(env.db, {
    enterpriseNumber: enterprise,
    enterpriseName: 'june',
    phone: PHONE,
    text: 'inspection test',
    sender: null,
    customId: null,
    serviceName: 'test',
    requestIp: null,
    userAgent: null,
  });
}

describe('retry and drop act on the job and record it on the row', () => {
  let env: TestEnv;
  let apiUrl: string;

  beforeAll(async () => {
    env = await createTestEnv({ RATE_LIMIT_PER_WINDOW: '1000', SEND_ATTEMPTS: '2' });
    await env.seedEnterprise({ number: '0367', name: 'june', customDomain: CREDENTIALS });
    await env.seedEnterprise({ number: '0368', name: 'may', customDomain: `${DEMO_USER} wrong-key` });
    // No worker yet: the first test needs the queue to itself.
    apiUrl = (await env.startService({ workers: 0 })).api!.url;
  });

  afterAll(async () => {
    await env?.cleanup();
  });

  it('lists a failed job with its attempts and failure reason, retries it while no worker runs, and a worker started later sends it once', async () => {
    const id = await newMessage(env);
    // A job that failed for good, the way one does when PostgreSQL is down for all its attempts.
    const connection = createRedis(env.config.redis, 'blocking');
    const queue = new Queue<SendJobData>(SEND_QUEUE, { connection, prefix: env.config.queuePrefix });
    const failing = new Worker<SendJobData>(
      SEND_QUEUE,
      () => {
        throw new Error('PostgreSQL unavailable (simulated)');
      },
      { connection, prefix: env.config.queuePrefix },
    );
    try {
      await queue.add(SEND_JOB, { messageId: id, enterpriseNumber: '0367' }, sendJobOptions(id, { sendAttempts: 1, retryBackoffMs: 50, keepFinishedJobsS: 3_600 }));
      await eventually(async () => ((await queue.getJobState(jobIdFor(id))) === 'failed' ? true : undefined));
    } finally {
      await failing.close();
      await queue.close();
      connection.disconnect();
    }

    const listed = await jobsJson(env, '--state', 'failed');
    expect(listed).toEqual([
      expect.objectContaining({
        message_id: id,
        enterprise_number: '0367',
        state: 'failed',
        attempts_made: 1,
        attempts_allowed: 1,
        next_attempt_at: null,
        last_error: 'PostgreSQL unavailable (simulated)',
        row_status: 'pending',
      }),
    ]);

    const retried = await runCli(env, 'jobs', ['retry', String(id), '--reason', 'database is back']);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toContain('job moved from failed back to waiting');
    expect(await jobState(env, id)).toBe('waiting');
    expect((await row(env, id)).operator_actions).toEqual([
      expect.objectContaining({ action: 'retry', from: 'pending', to: 'pending', job: 'failed → retry-finished', reason: 'database is back' }),
    ]);
    expect((await jobsJson(env, '--state', 'waiting')).map((j) => j.message_id)).toEqual([id]);

    await env.startWorker();
    const done = await finalRow(env, id);
    expect(done.status).toBe('success');
    expect(acceptedFor(env, done.provider_ref)).toHaveLength(1);
  });

  it('shows a message WebSMS refused, and after the key is fixed a retry sends it once; a sent message is never retried', async () => {
    const { json } = await postJson(apiUrl, '/send?wait=false', { enterprise_number: '0368', phone: PHONE, text: 'wrong key first' });
    const id = json.id as number;
    const refused = await finalRow(env, id);
    expect(refused).toMatchObject({ status: 'failed', error_code: 'websms_4' });

    // Without --state: what needs attention, including a completed job whose message failed.
    const attention = await jobsJson(env);
    const listed = attention.find((j) => j.message_id === id);
    expect(listed).toMatchObject({ enterprise_number: '0368', state: 'completed', row_status: 'failed' });
    expect(listed?.last_error).toMatch(/WebSMS error 4/);
    expect((await jobsJson(env, '--enterprise', '0367')).some((j) => j.message_id === id)).toBe(false);

    await env.db.updateTable('enterprises').set({ custom_domain: CREDENTIALS }).where('number', '=', '0368').execute();
    const retried = await runCli(env, 'jobs', ['retry', String(id)]);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toContain('row: failed → queued');
    const sent = await finalRow(env, id);
    expect(sent.status).toBe('success');
    expect(acceptedFor(env, sent.provider_ref)).toHaveLength(1);
    expect(sent.operator_actions).toEqual([expect.objectContaining({ action: 'retry', from: 'failed', to: 'queued', job: 'completed → retry-finished' })]);

    const again = await runCli(env, 'jobs', ['retry', String(id)]);
    expect(again.code).toBe(6);
    expect(again.stderr).toContain('it was sent (status success)');
    expect(acceptedFor(env, sent.provider_ref)).toHaveLength(1);
  });

  it('retries an unknown outcome through a lookup: a message WebSMS has is recorded as sent, never sent again', async () => {
    const id = await newMessage(env);
    await sql`UPDATE user_sms_send SET status = 'unknown', attempts = 1, claimed_at = now() - interval '1 hour', error_code = 'lookup_failed' WHERE id = ${String(id)}`.execute(env.db);
    const { provider_ref: ref } = await row(env, id);
    // WebSMS did receive the first attempt: its answer was what got lost.
    const websms = createWebsmsClient({ baseUrl: env.sandbox.url, timeoutMs: 5_000 });
    await websms.send({ user: DEMO_USER, apiKey: DEMO_KEY }, { msisdn: '375296254070', text: 'inspection test', sender: 'Vochi-CRM', customId: ref! });
    websms.close();

    const retried = await runCli(env, 'jobs', ['retry', String(id)]);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toContain('row: unknown → sending');
    const done = await finalRow(env, id);
    expect(done).toMatchObject({ status: 'success', resent_after_unknown: false });
    expect(acceptedFor(env, ref)).toHaveLength(1);
    expect(env.sandbox.calls().some((c) => c.endpoint === 'statusCustom/sms' && c.customId === ref)).toBe(true);
  });

  it('retries an unknown outcome through a lookup: a message WebSMS never received is resent once and marked as such', async () => {
    const id = await newMessage(env);
    await sql`UPDATE user_sms_send SET status = 'unknown', attempts = 1, claimed_at = now() - interval '1 hour' WHERE id = ${String(id)}`.execute(env.db);
    const { provider_ref: ref } = await row(env, id);

    const retried = await runCli(env, 'jobs', ['retry', String(id)]);
    expect(retried.code, retried.stderr).toBe(0);
    const done = await finalRow(env, id);
    expect(done).toMatchObject({ status: 'success', resent_after_unknown: true });
    expect(acceptedFor(env, ref)).toHaveLength(1);
  });

  it('drops a sending message as unknown only once no WebSMS call can be in flight', async () => {
    const id = await newMessage(env);
    await sql`UPDATE user_sms_send SET status = 'sending', attempts = 1, claimed_at = now() WHERE id = ${String(id)}`.execute(env.db);

    // A wide WebSMS budget: the command's own start-up must not outlast "a call may be in flight".
    const early = await runCli(env, 'jobs', ['drop', String(id)], { WEBSMS_TIMEOUT_MS: '60000' });
    expect(early.code).toBe(6);
    expect(early.stderr).toContain('may still be in flight');
    expect((await row(env, id)).status).toBe('sending');

    await sql`UPDATE user_sms_send SET claimed_at = now() - interval '1 minute' WHERE id = ${String(id)}`.execute(env.db);
    const dropped = await runCli(env, 'jobs', ['drop', String(id), '--json']);
    expect(dropped.code, dropped.stderr).toBe(0);
    expect(JSON.parse(dropped.stdout)).toMatchObject({ action: 'drop', result: 'done', row_from: 'sending', row_to: 'unknown' });
    const closed = await row(env, id);
    expect(closed).toMatchObject({ status: 'unknown', error_code: 'dropped_by_operator' });
    expect(closed.error_message).toMatch(/^Dropped by operator .+ while its outcome was unknown: it may have been sent/);
    expect(closed.operator_actions).toEqual([expect.objectContaining({ action: 'drop', from: 'sending', to: 'unknown', job: 'missing' })]);
  });

  it('refuses what it cannot do with distinct exit codes: nothing to drop 6, unknown message 1, bad arguments 2', async () => {
    const { json } = await postJson(apiUrl, '/send', { enterprise_number: '0367', phone: PHONE, text: 'sent' });
    const sent = await finalRow(env, json.id as number);
    expect(sent.status).toBe('success');
    // The completed job is still kept: dropping it removes the job and leaves the row as it is.
    const dropJob = await runCli(env, 'jobs', ['drop', sent.id]);
    expect(dropJob.code, dropJob.stderr).toBe(0);
    expect(dropJob.stdout).toContain('job (completed) removed');
    expect(await row(env, Number(sent.id))).toMatchObject({ status: 'success' });
    const nothing = await runCli(env, 'jobs', ['drop', sent.id]);
    expect(nothing.code).toBe(6);
    expect(nothing.stderr).toContain('nothing to drop');

    const missing = await runCli(env, 'jobs', ['retry', '987654321']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toContain('message 987654321 not found');

    for (const args of [[], ['list', '--state', 'stuck'], ['retry'], ['retry', 'abc'], ['drop', '1', '2'], ['purge', '1'], ['retry', '1', '--state', 'failed']]) {
      const result = await runCli(env, 'jobs', args);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr).toContain('usage: npm run jobs');
    }
  });
});

describe('delayed jobs under the rate limit', () => {
  let env: TestEnv;
  let apiUrl: string;

  beforeAll(async () => {
    env = await createTestEnv({ RATE_LIMIT_PER_WINDOW: '1', RATE_LIMIT_WINDOW_MS: '60000' });
    await env.seedEnterprise({ number: '0367', name: 'june', customDomain: CREDENTIALS });
    apiUrl = (await env.startService({ workers: 1 })).api!.url;
  });

  afterAll(async () => {
    await env?.cleanup();
  });

  it('lists delayed jobs with their next attempt time, drops one as failed, and a retry does not bypass the limit', async () => {
    const ids: number[] = [];
    for (let i = 0; i < 3; i += 1) {
      const { json } = await postJson(apiUrl, '/send?wait=false', { enterprise_number: '0367', phone: PHONE, text: `limited ${i}` });
      ids.push(json.id as number);
    }
    const startedAt = Date.now();
    const delayed = await eventually(async () => {
      const jobs = await jobsJson(env, '--state', 'delayed');
      return jobs.length === 2 ? jobs : undefined;
    }, 30_000, 500);
    const [, second, third] = ids as [number, number, number];
    expect(delayed.map((j) => j.message_id).sort()).toEqual([second, third].sort());
    // Their place in the line, and when each is expected to go: a window apart, before the backstop.
    const byId = new Map(delayed.map((j) => [j.message_id as number, j]));
    expect(byId.get(second)?.position).toBe(0);
    expect(byId.get(third)?.position).toBe(1);
    const expectedSecond = Date.parse(byId.get(second)?.expected_send_at as string);
    const expectedThird = Date.parse(byId.get(third)?.expected_send_at as string);
    expect(expectedThird - expectedSecond).toBeGreaterThanOrEqual(60_000);
    // The head's own timer is its turn; the one behind it has only a backstop, later than its turn
    // (the head's send wakes it).
    expect(Math.abs(expectedSecond - Date.parse(byId.get(second)?.next_attempt_at as string))).toBeLessThan(1_000);
    expect(expectedThird).toBeLessThan(Date.parse(byId.get(third)?.next_attempt_at as string));
    for (const job of delayed) {
      expect(job).toMatchObject({ enterprise_number: '0367', state: 'delayed', row_status: 'queued', last_error: 'waiting for a rate-limit slot of its enterprise' });
      const next = Date.parse(job.next_attempt_at as string);
      expect(next).toBeGreaterThan(startedAt);
      // The third is two windows down its line; a job's own timer is one window after its expected slot
      // (the send before it normally wakes it earlier, src/line).
      expect(next).toBeLessThanOrEqual(Date.now() + 3 * 61_000);
    }
    expect(await jobsJson(env, '--state', 'delayed', '--enterprise', '0368')).toEqual([]);

    const table = await runCli(env, 'jobs', ['list', '--state', 'delayed']);
    expect(table.stdout).toMatch(/^ message +\| enterprise \| state +\| attempts \| position \| expected_send +\| next_attempt +\| row_status \| last_error/);
    expect(table.stdout).toContain('(2 rows)');

    const dropped = await runCli(env, 'jobs', ['drop', String(second), '--reason', 'customer cancelled']);
    expect(dropped.code, dropped.stderr).toBe(0);
    expect(await jobState(env, second)).toBe('unknown');
    const closed = await row(env, second);
    expect(closed).toMatchObject({ status: 'failed', error_code: 'cancelled' });
    expect(closed.error_message).toMatch(/^Cancelled by operator .+: customer cancelled; not sent/);
    expect(closed.operator_actions).toEqual([expect.objectContaining({ action: 'drop', from: 'queued', to: 'failed', job: 'delayed → remove', reason: 'customer cancelled' })]);

    const runsBefore = await timesTaken(env, third);
    const retried = await runCli(env, 'jobs', ['retry', String(third)]);
    expect(retried.code, retried.stderr).toBe(0);
    expect(retried.stdout).toContain('delayed job promoted to run now');
    // It ran again at once, met the full window, and went back to wait for its slot: still one send in the minute.
    await eventually(async () => ((await timesTaken(env, third)) > runsBefore && (await jobState(env, third)) === 'delayed' ? true : undefined), 15_000);
    expect(await row(env, third)).toMatchObject({ status: 'queued', operator_actions: [expect.objectContaining({ action: 'retry', job: 'delayed → promote' })] });
    expect(env.sandbox.acceptedSends()).toHaveLength(1);
  });
});
