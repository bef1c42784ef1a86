import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { createDb } from '../../src/db/database.ts';
import { migrateToLatest } from '../../src/db/migrate.ts';

// Real service processes for fault tests and benchmarks: `node src/run.mjs src/main.ts <role>`
// (or, compiled, `node dist/src/run.mjs dist/src/main.js <role>`: what npm start runs, after
// buildService), each with its own environment, output captured, and a stop that always leaves
// nothing behind.

const ROOT = fileURLToPath(new URL('../../', import.meta.url));

export interface ServiceProcess {
  readonly name: string;
  readonly child: ChildProcess;
  readonly pid: number;
  /** stdout and stderr lines so far */
  output(): string[];
  /** Resolves with the exit code (or signal) once the process has exited. */
  exited: Promise<number | string>;
  /** SIGTERM, then SIGKILL after graceMs. */
  stop(graceMs?: number): Promise<number | string>;
  kill9(): Promise<number | string>;
}

export function spawnRole(role: 'all' | 'api' | 'worker' | 'background', env: Record<string, string>, name: string = role, options: { compiled?: boolean } = {}): ServiceProcess {
  // As the shipped launchers start them (package.json, ops/): the same code, compiled or not.
  const entry = options.compiled ? ['dist/src/run.mjs', 'dist/src/main.js'] : ['src/run.mjs', 'src/main.ts'];
  return spawnNode(['--max-semi-space-size=2', ...entry, role], env, name);
}

/** Compiles the service into dist/, as `npm run build` does (for spawnRole's `compiled`). */
export function buildService(): void {
  execFileSync(process.execPath, ['ops/build.mjs'], { cwd: ROOT, stdio: 'inherit' });
}

/** Any project entry point under Node 24 (the one running this code). */
export function spawnNode(args: string[], env: Record<string, string>, name: string): ServiceProcess {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, LOG_LEVEL: 'info', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    // Its own process group, so that killing it takes its children (forked workers) along.
    detached: true,
  });
  const lines: string[] = [];
  const collect = (chunk: Buffer) => lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const exited = new Promise<number | string>((resolve) => {
    child.once('exit', (code, signal) => resolve(code ?? signal ?? 'unknown'));
  });
  const stop = async (graceMs = 40_000) => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => killGroup(child, 'SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    }
    return exited;
  };
  return {
    name,
    child,
    pid: child.pid ?? -1,
    output: () => [...lines],
    exited,
    stop,
    async kill9() {
      if (child.exitCode === null && child.signalCode === null) killGroup(child, 'SIGKILL');
      return exited;
    },
  };
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  try {
    if (child.pid) process.kill(-child.pid, signal);
  } catch {
    child.kill(signal); // the group is already gone
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Polls until GET url answers with one of `statuses` (default: 200). */
export async function waitForHttp(url: string, timeoutMs = 30_000, statuses: number[] = [200]): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2_000) });
      await response.arrayBuffer();
      if (statuses.includes(response.status)) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer ${statuses.join('/')} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export interface IsolatedDatabase {
  url: string;
  drop(): Promise<void>;
}

/** A fresh, migrated database on the server of `serverUrl` (outside vitest, e.g. for benchmarks). */
export async function createIsolatedDatabase(serverUrl: string, name: string): Promise<IsolatedDatabase> {
  const admin = new pg.Client({ connectionString: serverUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  const db = createDb(url.toString(), { max: 1 });
  await migrateToLatest(db);
  await db.destroy();
  return {
    url: url.toString(),
    async drop() {
      const client = new pg.Client({ connectionString: serverUrl });
      await client.connect();
      await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await client.end();
    },
  };
}
