import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from './service-processes.ts';

// A redis-server of the test's own, in a temp dir on a free port, for outages that must not touch the
// machine's shared Redis (other engineers and CI use it: never stop, flush or reconfigure that one).
// Without persistence by default, so a restart loses every key, as a crashed cache server would;
// `appendOnly` keeps them (AOF, fsync always) for scenarios that need a Redis that remembers.

export interface PrivateRedis {
  readonly port: number;
  readonly url: string;
  /** pid of the running server, or undefined while it is stopped */
  pid(): number | undefined;
  /** SIGKILL: a crash, no goodbye to clients. */
  kill(): Promise<void>;
  /** (Re)starts on the same port and directory. */
  start(): Promise<void>;
  /** Stops the server (if running) and removes its directory. */
  close(): Promise<void>;
}

export async function startPrivateRedis(options: { appendOnly?: boolean } = {}): Promise<PrivateRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'sms-fault-redis-'));
  const port = await freePort();
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const output: string[] = [];

  const start = async () => {
    if (child) return;
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--daemonize', 'no', '--protected-mode', 'no'];
    args.push(...(options.appendOnly ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no']));
    const started = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = started;
    started.stdout?.on('data', (chunk: Buffer) => output.push(chunk.toString('utf8')));
    started.stderr?.on('data', (chunk: Buffer) => output.push(chunk.toString('utf8')));
    exited = new Promise<void>((resolve) => started.once('exit', () => resolve()));
    void exited.then(() => {
      if (child === started) child = undefined;
    });
    const deadline = Date.now() + 10_000;
    while (!(await pong(port))) {
      if (child !== started || Date.now() > deadline) {
        started.kill('SIGKILL');
        throw new Error(`private redis-server did not start on port ${port}: ${output.join('').slice(-2_000)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const kill = async () => {
    child?.kill('SIGKILL');
    await exited;
  };

  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    pid: () => child?.pid,
    kill,
    start,
    async close() {
      await kill();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** True when a Redis answers PING on the port (and is done loading its data). */
function pong(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1_000, () => done(false));
    socket.once('error', () => done(false));
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.once('data', (data) => done(data.toString('utf8').startsWith('+PONG')));
  });
}
