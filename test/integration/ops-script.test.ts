import { spawn, execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, postJson, type TestEnv } from '../support/context.ts';
import { freePort, waitForHttp } from '../support/service-processes.ts';

// ops/send_user_sms.sh as an operator runs it: a real bash, real service processes (API + 2 workers)
// against this file's database, queue prefix and WebSMS sandbox, with the PID and log files in a
// temporary directory. Every process group the script starts is accounted for at the end.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const SCRIPT = join(ROOT, 'ops/send_user_sms.sh');
const PHONE = '+375296254070';

interface ScriptResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

let env: TestEnv;
let dir: string;
let port: number;
let pidFile: string;
let logFile: string;
let envFile: string;
const groupsSeen = new Set<number>();

function run(args: string[], extra: Record<string, string> = {}, timeoutMs = 120_000): Promise<ScriptResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', [SCRIPT, ...args], {
      cwd: dir,
      // Service settings come from the env file (read by the script); only the script's own here.
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: process.env.HOME ?? dir, USER_SMS_ENV_FILE: envFile, NODE_BIN: process.execPath, ...extra },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`ops script ${args.join(' ')} did not finish within ${timeoutMs} ms\n${stdout}\n${stderr}`));
    }, timeoutMs);
    // 'close': the script exited and its output pipes are closed, so nothing it started holds them.
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const readPid = () => Number(readFileSync(pidFile, 'utf8').trim());

/** Every live process in process group `pgid`. */
function groupMembers(pgid: number): number[] {
  const out = execFileSync('ps', ['-eo', 'pid=,pgid='], { encoding: 'utf8' });
  return out
    .split('\n')
    .map((line) => line.trim().split(/\s+/).map(Number))
    .filter(([pid, group]) => group === pgid && pid !== undefined && !Number.isNaN(pid))
    .map(([pid]) => pid!);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function startService(): Promise<number> {
  const started = await run(['start']);
  expect(started.code, started.stdout + started.stderr).toBe(0);
  const pid = readPid();
  groupsSeen.add(pid);
  return pid;
}

beforeAll(async () => {
  env = await createTestEnv();
  await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  dir = mkdtempSync(join(tmpdir(), 'user-sms-ops-'));
  port = await freePort();
  pidFile = join(dir, 'run', 'send_user_sms.pid');
  logFile = join(dir, 'log', 'send_user_sms.log');
  envFile = join(dir, 'user-sms.env');
  writeFileSync(
    envFile,
    [
      `DATABASE_URL=${env.databaseUrl}`,
      `REDIS_URL=${env.config.redisUrl}`,
      `QUEUE_PREFIX='${env.config.queuePrefix}'`,
      `WEBSMS_BASE_URL=${env.sandbox.url}`,
      `PORT=${port}`,
      'WORKER_PROCESSES=2',
      'WORKER_CONCURRENCY=4',
      'LOG_LEVEL=info',
      `USER_SMS_PID_FILE=${pidFile}`,
      `USER_SMS_LOG_FILE=${logFile}`,
      '',
    ].join('\n'),
  );
});

afterAll(async () => {
  // Whatever a failed test left running goes now.
  for (const pgid of groupsSeen) {
    try {
      process.kill(-pgid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  await env?.cleanup();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('ops/send_user_sms.sh', () => {
  it('reports "not running" with exit code 3, and stop on a stopped service succeeds', async () => {
    const status = await run(['status']);
    expect(status.code).toBe(3);
    expect(status.stdout).toMatch(/not running/);
    const stop = await run(['stop']);
    expect(stop.code).toBe(0);
  });

  it('builds the compiled service when it is missing, runs it, and does not build it again while it is current', async () => {
    rmSync(join(ROOT, 'dist'), { recursive: true, force: true });
    const first = await run(['start']);
    expect(first.code, first.stdout + first.stderr).toBe(0);
    groupsSeen.add(readPid());
    expect(first.stdout).toContain('Building the service');
    expect(existsSync(join(ROOT, 'dist/src/main.js'))).toBe(true);
    // The running service is the compiled one.
    expect(readFileSync(`/proc/${readPid()}/cmdline`, 'utf8').split('\0')).toEqual(expect.arrayContaining(['dist/src/run.mjs', 'dist/src/main.js', 'all']));
    expect((await run(['stop'])).code).toBe(0);

    const second = await run(['start']);
    expect(second.code, second.stdout + second.stderr).toBe(0);
    groupsSeen.add(readPid());
    expect(second.stdout).not.toContain('Building the service');
    expect((await run(['stop'])).code).toBe(0);
  }, 180_000);

  it('starts the API and WORKER_PROCESSES workers under one process group, reports them, and stops them all', async () => {
    const pid = await startService();
    expect(isAlive(pid)).toBe(true);
    // The main process leads its own group: the API, two worker processes and the background process.
    await eventually(() => Promise.resolve(groupMembers(pid).length === 4 ? true : undefined), 30_000);
    const health = await eventually(async () => {
      const response = await fetch(`http://127.0.0.1:${port}/health`);
      const json = (await response.json()) as Record<string, unknown>;
      return response.status === 200 && json.workers === 2 ? json : undefined;
    }, 30_000);
    expect(health.workers_alive).toBe(true);

    const status = await run(['status']);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(`PID ${pid}`);
    expect(status.stdout).toContain('2 worker process(es), 1 background process');

    const again = await run(['start']);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/already running/);
    expect(readPid()).toBe(pid);

    // It is the service: an SMS goes out through it.
    const sent = await postJson(`http://127.0.0.1:${port}`, '/send', { enterprise_number: '0367', phone: PHONE, text: 'via the ops script' });
    expect(sent.status).toBe(200);
    expect(sent.json.success).toBe(true);

    const stop = await run(['stop']);
    expect(stop.code, stop.stdout + stop.stderr).toBe(0);
    expect(stop.stdout).not.toMatch(/forced/);
    expect(groupMembers(pid)).toEqual([]);
    expect(existsSync(pidFile)).toBe(false);
    expect((await run(['status'])).code).toBe(3);

    // The service logged to the log file, appended, and drained on SIGTERM.
    const log = readFileSync(logFile, 'utf8');
    expect(log).toMatch(/"msg":"api listening"/);
    expect(log).toMatch(/"msg":"draining"/);
    expect(log).not.toContain(DEMO_KEY);
  });

  it('treats a PID file naming a dead process or another program as stale: status 1, then start replaces it', async () => {
    const gone = spawn('true');
    await new Promise((resolve) => gone.once('exit', resolve));
    for (const stalePid of [gone.pid!, process.pid]) {
      writeFileSync(pidFile, `${stalePid}\n`);
      const status = await run(['status']);
      expect(status.code, `PID ${stalePid}`).toBe(1);
      expect(status.stdout).toMatch(/dead/);
    }
    // process.pid is alive but is not the service: it must never be signalled.
    const stop = await run(['stop']);
    expect(stop.code).toBe(0);
    expect(stop.stdout).toMatch(/stale PID file/);
    expect(isAlive(process.pid)).toBe(true);

    writeFileSync(pidFile, `${gone.pid!}\n`);
    const pid = await startService();
    expect(pid).not.toBe(gone.pid);
    expect((await run(['status'])).code).toBe(0);
    expect((await run(['stop'])).code).toBe(0);
    expect(groupMembers(pid)).toEqual([]);
  });

  it('kills the whole process group when the service does not stop within USER_SMS_STOP_TIMEOUT', async () => {
    const pid = await startService();
    await eventually(() => Promise.resolve(groupMembers(pid).length === 4 ? true : undefined), 30_000);
    const workers = groupMembers(pid).filter((member) => member !== pid);
    // A main process that cannot drain (frozen): SIGTERM stays pending, its workers keep running.
    process.kill(pid, 'SIGSTOP');
    const stop = await run(['stop'], { USER_SMS_STOP_TIMEOUT: '2' });
    expect(stop.code, stop.stdout + stop.stderr).toBe(0);
    expect(stop.stdout + stop.stderr).toMatch(/SIGKILL/);
    expect(stop.stdout).toMatch(/stopped \(forced\)/);
    expect(groupMembers(pid)).toEqual([]);
    for (const worker of workers) expect(isAlive(worker)).toBe(false);
    expect(existsSync(pidFile)).toBe(false);
  });

  it('restart replaces the running service with a new one', async () => {
    const first = await startService();
    const restart = await run(['restart']);
    expect(restart.code, restart.stdout + restart.stderr).toBe(0);
    const second = readPid();
    groupsSeen.add(second);
    expect(second).not.toBe(first);
    expect(groupMembers(first)).toEqual([]);
    await waitForHttp(`http://127.0.0.1:${port}/`);
    expect((await run(['stop'])).code).toBe(0);
    expect(groupMembers(second)).toEqual([]);
  });

  it('fails start with exit 1, the log tail and nothing left running when the service cannot start', async () => {
    const badDatabase = `postgresql://postgres@127.0.0.1:${await freePort()}/nowhere`;
    const start = await run(['start'], { USER_SMS_ENV_FILE: writeEnv({ DATABASE_URL: badDatabase }) });
    expect(start.code).toBe(1);
    expect(start.stderr).toMatch(/exited during start-up/);
    expect(start.stderr).toMatch(/start-up failed/);
    expect(existsSync(pidFile)).toBe(false);
    const failedPid = (JSON.parse(start.stderr.split('\n').filter((line) => line.includes('start-up failed')).at(-1)!) as { pid: number }).pid;
    expect(isAlive(failedPid)).toBe(false);
  });

  it('refuses to start when something else already answers on the port (the old service, say)', async () => {
    const squatter: Server = createServer((_req, res) => res.end('{"service":"User SMS Sending Service"}'));
    await new Promise<void>((resolve) => squatter.listen(port, '127.0.0.1', resolve));
    try {
      const start = await run(['start']);
      expect(start.code).toBe(1);
      expect(start.stderr).toMatch(/already in use/);
      expect(existsSync(pidFile)).toBe(false);
    } finally {
      await new Promise((resolve) => squatter.close(resolve));
    }
  });

  it('passes balance <n> to the balance command, and rejects unknown commands with exit 2', async () => {
    const balance = await run(['balance', '0367']);
    expect(balance.code, balance.stdout + balance.stderr).toBe(0);
    expect(balance.stdout).toContain('0367');
    expect(balance.stdout).toContain('39.056508');
    expect(balance.stdout + balance.stderr).not.toContain(DEMO_KEY);
    expect((await run(['balance', '9999'])).code).not.toBe(0);
    expect((await run(['balance'])).code).toBe(2);
    expect((await run(['frobnicate'])).code).toBe(2);
  });
});

/** A copy of the env file with some settings replaced; returns its path. */
function writeEnv(overrides: Record<string, string>): string {
  const lines = readFileSync(envFile, 'utf8')
    .split('\n')
    .filter((line) => !Object.keys(overrides).some((key) => line.startsWith(`${key}=`)));
  const path = join(dir, `override-${Object.keys(overrides).join('-')}.env`);
  writeFileSync(path, [...lines, ...Object.entries(overrides).map(([k, v]) => `${k}=${v}`), ''].join('\n'));
  return path;
}
