import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';
import { freePort, spawnRole, waitForHttp, type ServiceProcess } from '../support/service-processes.ts';
import { Receiver } from '../support/callback-receiver.ts';

// The service as operators run it: real processes, signals and exit codes.

const PHONE = '+375296254070';
let env: TestEnv;
const started: ServiceProcess[] = [];

function serviceEnv(port: number, extra: Record<string, string> = {}): Record<string, string> {
  return {
    PORT: String(port),
    DATABASE_URL: env.config.databaseUrl,
    REDIS_URL: env.config.redisUrl,
    WEBSMS_BASE_URL: env.config.websms.baseUrl,
    QUEUE_PREFIX: env.config.queuePrefix,
    WEBSMS_TIMEOUT_MS: '2000',
    ...extra,
  };
}

function start(role: 'all' | 'api' | 'worker' | 'background', vars: Record<string, string>): ServiceProcess {
  const child = spawnRole(role, vars);
  started.push(child);
  return child;
}

/** /health counts the workers connected to the queue; processes start slowly on a busy machine. */
async function workersLive(port: number, count: number): Promise<void> {
  await eventually(async () => {
    const health = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { workers: number };
    return health.workers === count ? true : undefined;
  }, 30_000);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The role a service process was started with: the last word of its command line. */
function roleOf(pid: number): string | undefined {
  return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).at(-1);
}

/** The nice value of each of a process's threads (field 19 of /proc/…/task/…/stat). */
function threadNices(pid: number): number[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => {
    const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
  });
}

/** A process's autogroup (Linux's scheduling group of its session) and the nice value that group has. */
function autogroupOf(pid: number): { group: string; nice: number } {
  const [group, , nice] = readFileSync(`/proc/${pid}/autogroup`, 'utf8').trim().split(' ');
  return { group: group!, nice: Number(nice) };
}

// Kernels built without autogroup scheduling have no such file, and nothing to lower there.
const hasAutogroup = existsSync('/proc/self/autogroup');
if (!hasAutogroup && !process.env.CI) console.warn('skipped: /proc/self/autogroup is missing (a kernel without autogroup scheduling): the session-group test needs it');

function childPids(pid: number): number[] {
  try {
    return execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

beforeAll(async () => {
  env = await createTestEnv();
  await env.seedEnterprise({ number: '0367', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
});
afterEach(async () => {
  await Promise.all(started.splice(0).map((p) => p.kill9()));
});
afterAll(async () => {
  await env?.cleanup();
});

describe('service processes', () => {
  it('`all` runs migrations, the API and supervised workers, and SIGTERM stops every one of them with exit 0', async () => {
    const port = await freePort();
    const service = start('all', serviceEnv(port, { WORKER_PROCESSES: '2' }));
    await waitForHttp(`http://127.0.0.1:${port}/health`);
    await workersLive(port, 2);
    const sent = await postJson(`http://127.0.0.1:${port}`, '/send', { enterprise_number: '0367', phone: PHONE, text: 'from npm start' });
    expect(sent.status).toBe(200);
    expect(sent.json.success).toBe(true);

    const children = childPids(service.pid);
    expect(children.map(roleOf).sort()).toEqual(['background', 'worker', 'worker']);
    expect(await service.stop(30_000)).toBe(0);
    await eventually(() => (children.every((pid) => !alive(pid)) ? true : undefined), 10_000);
  });

  it('`all` gives the background work a process of its own at BACKGROUND_NICE: callbacks and delivery statuses arrive, its workers only send', async () => {
    const secret = `whsec_${randomBytes(32).toString('base64')}`;
    const receiver = new Receiver(secret);
    await receiver.start();
    try {
      const port = await freePort();
      const service = start(
        'all',
        serviceEnv(port, {
          WORKER_PROCESSES: '1',
          CALLBACK_ALLOWED_HOSTS: '127.0.0.1',
          CALLBACK_SIGNING_SECRET: secret,
          DELIVERY_POLL_SCHEDULE_MS: '300,1000',
          DELIVERY_POLL_INTERVAL_MS: '200',
        }),
      );
      await waitForHttp(`http://127.0.0.1:${port}/health`);
      await workersLive(port, 1);
      const children = await eventually(() => (childPids(service.pid).length === 2 ? childPids(service.pid) : undefined), 30_000);
      const background = children.find((pid) => roleOf(pid) === 'background')!;
      const worker = children.find((pid) => roleOf(pid) === 'worker')!;
      // Every thread of the background process gives way; the worker's do not. Lowered as it starts.
      await eventually(() => (threadNices(background).every((nice) => nice === 10) ? true : undefined), 30_000);
      expect(threadNices(worker).every((nice) => nice === 0)).toBe(true);
      // It shares its session with the API and the workers: their scheduling group is left as it is.
      if (hasAutogroup) {
        expect(autogroupOf(background)).toEqual(autogroupOf(service.pid));
        expect(autogroupOf(service.pid).nice).toBe(0);
      }
      expect(readFileSync(`/proc/${worker}/environ`, 'utf8').split('\0')).toContain('WORKER_BACKGROUND=false');
      await eventually(() => (service.output().some((line) => line.includes('background work started')) ? true : undefined), 30_000);

      const sent = await postJson(`http://127.0.0.1:${port}`, '/send', { enterprise_number: '0367', phone: PHONE, text: 'background', callback_url: receiver.url('/crm') });
      expect(sent.status).toBe(200);
      const events = await eventually(() => (receiver.at('/crm').length >= 2 ? receiver.at('/crm') : undefined), 30_000);
      expect(events.map((e) => (JSON.parse(e.body) as { type: string }).type)).toEqual(['message.sent', 'message.delivered']);
      expect(events.every((e) => e.verified)).toBe(true);
      const row = await env.db.selectFrom('user_sms_send').select(['delivery_status']).where('id', '=', String(sent.json.id)).executeTakeFirstOrThrow();
      expect(row.delivery_status).toBe('delivered');
      // The worker sent it; the look-up and both deliveries were the background process's.
      const logs = service.output().flatMap((line) => (line.startsWith('{') ? [JSON.parse(line) as { pid?: number; msg?: string }] : []));
      expect(logs.some((l) => l.pid === background && l.msg === 'callback delivery started')).toBe(true);
      expect(logs.some((l) => l.pid === worker && l.msg === 'callback delivery started')).toBe(false);
    } finally {
      await receiver.stop();
    }
  });

  it.skipIf(!hasAutogroup && !process.env.CI)('`background` started in a session of its own (a systemd unit, a container) lowers that session\'s scheduling group too, so that its nice value counts against the other processes', async () => {
    const port = await freePort();
    const worker = start('worker', serviceEnv(port, { WORKER_BACKGROUND: 'false' }));
    const background = start('background', serviceEnv(port));
    const api = start('api', serviceEnv(port));
    await waitForHttp(`http://127.0.0.1:${port}/health`);
    await workersLive(port, 1);
    await eventually(() => (background.output().some((line) => line.includes('background work started')) ? true : undefined), 30_000);
    // Each leads a session of its own, as under systemd: nice alone would count only within it.
    expect(new Set([api.pid, worker.pid, background.pid].map((pid) => autogroupOf(pid).group)).size).toBe(3);
    expect(autogroupOf(background.pid).nice).toBe(10);
    expect(threadNices(background.pid).every((nice) => nice === 10)).toBe(true);
    for (const other of [api.pid, worker.pid]) {
      expect(autogroupOf(other).nice).toBe(0);
      expect(threadNices(other).every((nice) => nice === 0)).toBe(true);
    }
    const lowered = background.output().flatMap((line) => (line.startsWith('{') ? [JSON.parse(line) as { msg?: string; sessionGroup?: string; nice?: number }] : [])).find((l) => l.msg === 'background priority lowered');
    expect(lowered).toMatchObject({ nice: 10, sessionGroup: 'lowered' });
  });

  it('forked worker and background processes drain and exit by themselves when their supervisor is killed with -9', async () => {
    const port = await freePort();
    const service = start('all', serviceEnv(port, { WORKER_PROCESSES: '1' }));
    // Killed the moment both children exist, while they are still starting: a child must notice a
    // supervisor that is gone before it has anything to drain, too.
    const children = await eventually(() => (childPids(service.pid).length === 2 ? childPids(service.pid) : undefined), 30_000, 5);
    process.kill(service.pid, 'SIGKILL'); // the supervisor alone, not its process group
    await service.exited;
    try {
      await eventually(() => (children.some(alive) ? undefined : true), 20_000);
    } finally {
      for (const pid of children.filter(alive)) process.kill(pid, 'SIGKILL'); // no orphan outlives a failure
    }
  });

  it('runs the API and any number of workers as separate processes', async () => {
    const port = await freePort();
    start('worker', serviceEnv(port));
    start('worker', serviceEnv(port));
    start('api', serviceEnv(port));
    await waitForHttp(`http://127.0.0.1:${port}/health`);
    await workersLive(port, 2);
    const sent = await postJson(`http://127.0.0.1:${port}`, '/send', { enterprise_number: '0367', phone: PHONE, text: 'split roles' });
    expect(sent.json.success).toBe(true);
  });

  it('on SIGTERM answers waiting callers at once with 202 and the message id, and loses nothing', async () => {
    const port = await freePort();
    // The second message's slot is a whole window away (10 s): far beyond the 3 s in which the API
    // must answer it after SIGTERM, even on a busy machine, so the answer is the drain's, not the slot's.
    const limits = { RATE_LIMIT_PER_WINDOW: '1', RATE_LIMIT_WINDOW_MS: '10000', RATE_LIMIT_MARGIN_MS: '0', SEND_WAIT_MS: '20000' };
    start('worker', serviceEnv(port, limits));
    const api = start('api', serviceEnv(port, limits));
    await waitForHttp(`http://127.0.0.1:${port}/health`);
    const base = `http://127.0.0.1:${port}`;
    expect((await postJson(base, '/send', { enterprise_number: '0367', phone: PHONE, text: 'drain first' })).status).toBe(200);

    // This one waits for its slot (about 10 s away) when the API is told to stop: admitted (its row
    // exists) and still unanswered.
    let answered = false;
    const waiting = postJson(base, '/send', { enterprise_number: '0367', phone: PHONE, text: 'drain second' }).finally(() => {
      answered = true;
    });
    await eventually(async () => {
      const row = await env.db.selectFrom('user_sms_send').select('id').where('text', '=', 'drain second').executeTakeFirst();
      return row === undefined ? undefined : true;
    });
    expect(answered, 'the second caller still waits for its slot').toBe(false);
    const signalledAt = Date.now();
    api.child.kill('SIGTERM');
    const answer = await waiting;
    expect(Date.now() - signalledAt).toBeLessThan(3_000);
    expect(answer.status).toBe(202);
    expect(answer.json.id).toEqual(expect.any(Number));
    expect(await api.exited).toBe(0);

    // The worker still sends it when its slot comes.
    const row = await eventually(async () => {
      const r = await env.db.selectFrom('user_sms_send').select(['status']).where('id', '=', String(answer.json.id)).executeTakeFirst();
      return r?.status === 'success' ? r : undefined;
    }, 30_000);
    expect(row.status).toBe('success');
    expect(env.sandbox.acceptedSends().filter((c) => c.text === 'drain second')).toHaveLength(1);
  });

  it('refuses to start on an invalid setting, naming the variable', async () => {
    const service = start('api', serviceEnv(8014, { PORT: 'eighty', RATE_LIMIT_WINDOW_MS: '5' }));
    expect(await service.exited).toBe(2);
    const output = service.output().join('\n');
    expect(output).toContain('PORT');
    expect(output).toContain('RATE_LIMIT_WINDOW_MS');
  });

  it('refuses to start with a clear message when Redis is unreachable', async () => {
    // Nothing listens there: one server, or (in the cluster project) the only node named.
    const nowhere = `127.0.0.1:${await freePort()}`;
    const service = start('worker', serviceEnv(await freePort(), process.env.REDIS_CLUSTER_NODES ? { REDIS_CLUSTER_NODES: nowhere } : { REDIS_URL: `redis://${nowhere}` }));
    expect(await service.exited).toBe(1);
    expect(service.output().join('\n')).toContain('Redis is not reachable');
  }, 30_000);
});
