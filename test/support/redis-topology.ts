import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './service-processes.ts';
import { startTcpProxy, type TcpProxy } from './tcp-proxy.ts';

// Redis set-ups of the test's own, from real redis-server processes on free loopback ports in temp
// dirs, started and stopped by the test (the machine's shared Redis is never touched):
// - a Sentinel set: a master, a replica (replicating through a TCP proxy the test can stall, to make
//   replication lag on purpose) and three sentinels that fail over within a couple of seconds;
// - a Cluster of three masters (no replicas), its slots assigned by `redis-cli --cluster create`.
// Nothing is persisted: a server that restarts comes back empty, as a crashed cache would.

const run = promisify(execFile);

export interface RedisProcess {
  readonly name: string;
  readonly port: number;
  pid(): number | undefined;
  /** SIGKILL: a crash, no goodbye to anyone. */
  kill(): Promise<void>;
  /** (Re)starts on the same port and directory, with the arguments of a restart (see startRedisProcess). */
  start(): Promise<void>;
  output(): string;
}

// Safety net: should the test process exit without closing its set-up (a crash, a timeout kill), take
// the servers with it rather than leave them running.
const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});

/** `restartArgs`: the arguments of every later start(), when they differ from the first's. */
async function startRedisProcess(name: string, dir: string, port: number, firstArgs: string[], restartArgs = firstArgs): Promise<RedisProcess> {
  let child: ChildProcess | undefined;
  let args = firstArgs;
  let exited: Promise<void> = Promise.resolve();
  const output: string[] = [];
  const start = async () => {
    if (child) return;
    const started = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir });
    child = started;
    running.add(started);
    started.stdout?.on('data', (chunk: Buffer) => output.push(chunk.toString('utf8')));
    started.stderr?.on('data', (chunk: Buffer) => output.push(chunk.toString('utf8')));
    exited = new Promise<void>((resolve) => started.once('exit', () => resolve()));
    void exited.then(() => {
      running.delete(started);
      if (child === started) child = undefined;
    });
    const deadline = Date.now() + 10_000;
    while (!(await pong(port))) {
      if (child !== started || Date.now() > deadline) {
        started.kill('SIGKILL');
        throw new Error(`${name} (redis-server ${args.join(' ')}) did not start on port ${port}: ${output.join('').slice(-2_000)}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await start();
  args = restartArgs;
  return {
    name,
    port,
    pid: () => child?.pid,
    async kill() {
      child?.kill('SIGKILL');
      await exited;
    },
    start,
    output: () => output.join(''),
  };
}

const serverArgs = (port: number, dir: string, password?: string) => [
  ...['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no', '--protected-mode', 'no'],
  // The same password for clients and for a replica's link to its master (either may be promoted).
  ...(password ? ['--requirepass', password, '--masterauth', password] : []),
];

/** Passwords of the servers and sentinels started with one, by port, for command(). */
const passwords = new Map<number, string>();

export const SENTINEL_MASTER = 'sms-test';

export interface SentinelSet {
  /** the servers as started: [0] the first master, [1] its replica */
  readonly servers: readonly RedisProcess[];
  readonly sentinels: readonly RedisProcess[];
  /** between the replica and the first master: stall() makes replication lag */
  readonly replicationProxy: TcpProxy;
  /** What the service needs to follow the master through the sentinels. */
  readonly env: Record<string, string>;
  /** The master's port as the sentinels (the first that answers) report it. */
  masterPort(): Promise<number | undefined>;
  /**
   * Whether every sentinel would promote the server on `port` now: it lists it as a replica, neither
   * down nor disconnected, with its link to the master up. (A server's own INFO says it replicates
   * well before the sentinels' view, refreshed every few seconds, does; a failover asked for before
   * then finds no replica to promote.)
   */
  promotable(port: number): Promise<boolean>;
  /** Each sentinel's view of the server on `port` (its flags and link) and its own role, for a failure's message. */
  describeReplica(port: number): Promise<string>;
  /** SENTINEL FAILOVER, asked again while a sentinel answers that it has no replica to promote yet. */
  switchover(timeoutMs?: number): Promise<void>;
  /** Every pid still running (servers and sentinels). */
  pids(): number[];
  /** Kills every process and removes the directories. */
  close(): Promise<void>;
}

export interface SentinelSetOptions {
  downAfterMs?: number;
  /** requirepass of the master and the replica (and the sentinels' auth-pass to them) */
  password?: string;
  /** requirepass of the sentinels themselves */
  sentinelPassword?: string;
}

export async function startSentinelSet(options: SentinelSetOptions = {}): Promise<SentinelSet> {
  const { password, sentinelPassword } = options;
  const dir = await mkdtemp(join(tmpdir(), 'sms-sentinel-'));
  const processes: RedisProcess[] = [];
  let proxy: TcpProxy | undefined;
  try {
    const masterPort = await freePort();
    if (password) passwords.set(masterPort, password);
    const master = await startRedisProcess('master', dir, masterPort, [...serverArgs(masterPort, dir, password), '--dbfilename', 'master.rdb']);
    processes.push(master);
    proxy = await startTcpProxy({ host: '127.0.0.1', port: masterPort });
    const replicaPort = await freePort();
    // Through the proxy, but announcing where it really listens, so sentinels and a promoted master's
    // replicas find it; repl-diskless-load keeps a full sync quick.
    if (password) passwords.set(replicaPort, password);
    // Restarted, it comes back without --replicaof, as a crashed master does in production: once the
    // sentinels promote a replica they rewrite its config file without the line, so a restart finds
    // a master that the sentinels then turn into a replica of the current one (+convert-to-slave).
    // With the line kept it would come back replicating the proxy, that is whichever server listens
    // behind it, and wait on the sentinels' slower +fix-slave-config instead.
    const replicaArgs = [...serverArgs(replicaPort, dir, password), '--dbfilename', 'replica.rdb', '--replica-announce-ip', '127.0.0.1'];
    const replica = await startRedisProcess('replica', dir, replicaPort, [...replicaArgs, '--replicaof', '127.0.0.1', String(proxy.port)], replicaArgs);
    processes.push(replica);
    await waitUntil('the replica to be in sync', 10_000, async () => (await info(replicaPort, 'replication')).includes('master_link_status:up'));

    const downAfterMs = options.downAfterMs ?? 1_000;
    const sentinels: RedisProcess[] = [];
    for (let i = 0; i < 3; i += 1) {
      const port = await freePort();
      const conf = join(dir, `sentinel-${i}.conf`);
      // Sentinel rewrites its config file as it learns: each its own, writable.
      await writeFile(
        conf,
        [
          `port ${port}`,
          'bind 127.0.0.1',
          'protected-mode no',
          `dir ${dir}`,
          `sentinel monitor ${SENTINEL_MASTER} 127.0.0.1 ${masterPort} 2`,
          `sentinel down-after-milliseconds ${SENTINEL_MASTER} ${downAfterMs}`,
          `sentinel failover-timeout ${SENTINEL_MASTER} 10000`,
          `sentinel parallel-syncs ${SENTINEL_MASTER} 1`,
          ...(password ? [`sentinel auth-pass ${SENTINEL_MASTER} ${password}`] : []),
          // A sentinel with a password needs it from the other sentinels too (sentinel-pass).
          ...(sentinelPassword ? [`requirepass ${sentinelPassword}`, `sentinel sentinel-pass ${sentinelPassword}`] : []),
          '',
        ].join('\n'),
      );
      if (sentinelPassword) passwords.set(port, sentinelPassword);
      const sentinel = await startRedisProcess(`sentinel-${i}`, dir, port, [conf, '--sentinel']);
      processes.push(sentinel);
      sentinels.push(sentinel);
    }
    // Ready when every sentinel knows the replica and the other sentinels (it must, to vote and promote).
    await waitUntil('the sentinels to know the replica and each other', 20_000, async () => {
      for (const sentinel of sentinels) {
        const master = await command(sentinel.port, ['SENTINEL', 'MASTER', SENTINEL_MASTER]);
        const fields = new Map<string, string>();
        for (let i = 0; i + 1 < master.length; i += 2) fields.set(master[i]!, master[i + 1]!);
        if (fields.get('num-slaves') !== '1' || fields.get('num-other-sentinels') !== '2') return false;
      }
      return true;
    });

    const set: SentinelSet = {
      servers: [master, replica],
      sentinels,
      replicationProxy: proxy,
      env: {
        REDIS_SENTINELS: sentinels.map((s) => `127.0.0.1:${s.port}`).join(','),
        REDIS_SENTINEL_MASTER: SENTINEL_MASTER,
        // Host and port unused under Sentinel; a port nothing listens on proves it.
        REDIS_URL: password ? `redis://:${encodeURIComponent(password)}@127.0.0.1:1/0` : 'redis://127.0.0.1:1/0',
        ...(sentinelPassword ? { REDIS_SENTINEL_PASSWORD: sentinelPassword } : {}),
      },
      async masterPort() {
        for (const sentinel of sentinels) {
          const reply = await command(sentinel.port, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', SENTINEL_MASTER]).catch(() => undefined);
          if (reply?.[1]) return Number(reply[1]);
        }
        return undefined;
      },
      async promotable(port) {
        for (const sentinel of sentinels) {
          const replica = (await sentinelReplicas(sentinel.port)).find((r) => r.get('port') === String(port));
          if (!replica || replica.get('flags') !== 'slave' || replica.get('master-link-status') !== 'ok') return false;
        }
        return true;
      },
      async describeReplica(port) {
        const views = await Promise.all(
          sentinels.map(async (sentinel) => {
            const replica = (await sentinelReplicas(sentinel.port).catch(() => [])).find((r) => r.get('port') === String(port));
            return `sentinel ${sentinel.port}: ${replica ? `flags ${replica.get('flags')}, link ${replica.get('master-link-status')}, master ${replica.get('master-port')}` : 'not a replica it knows'}`;
          }),
        );
        const own = (await info(port, 'replication')).split(/\r?\n/).filter((line) => /^(role|master_port|master_link_status):/.test(line));
        return `server ${port}: ${own.join(' ') || 'no answer'}; ${views.join('; ')}`;
      },
      async switchover(timeoutMs = 30_000) {
        let reply: string[] = [];
        await waitUntil('a sentinel to accept SENTINEL FAILOVER', timeoutMs, async () => {
          reply = await command(sentinels[0]!.port, ['SENTINEL', 'FAILOVER', SENTINEL_MASTER]);
          return reply[0] === 'OK';
        }).catch((error: unknown) => {
          throw new Error(`${String(error)}; last answer: ${reply.join(' ')}`);
        });
      },
      pids: () => processes.map((p) => p.pid()).filter((pid): pid is number => pid !== undefined && isAlive(pid)),
      async close() {
        await Promise.all(processes.map((p) => p.kill()));
        await proxy?.close();
        await rm(dir, { recursive: true, force: true });
        for (const p of processes) passwords.delete(p.port);
      },
    };
    return set;
  } catch (error) {
    await Promise.all(processes.map((p) => p.kill()));
    await proxy?.close();
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

export interface LocalCluster {
  readonly nodes: readonly RedisProcess[];
  /** REDIS_CLUSTER_NODES for the service */
  readonly nodesVariable: string;
  pids(): number[];
  close(): Promise<void>;
}

/** Three masters, slots split by redis-cli; resolves once the cluster says `cluster_state:ok` everywhere. */
export async function startLocalCluster(): Promise<LocalCluster> {
  const dir = await mkdtemp(join(tmpdir(), 'sms-cluster-'));
  const nodes: RedisProcess[] = [];
  try {
    for (let i = 0; i < 3; i += 1) {
      const port = await freePort();
      nodes.push(
        await startRedisProcess(`node-${i}`, dir, port, [
          ...serverArgs(port, dir),
          '--dbfilename',
          `node-${i}.rdb`,
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, `nodes-${i}.conf`),
          '--cluster-node-timeout',
          '2000',
        ]),
      );
    }
    await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes'], { timeout: 30_000 });
    await waitUntil('every cluster node to report cluster_state:ok', 20_000, async () => {
      for (const node of nodes) if (!(await info(node.port, 'cluster', ['CLUSTER', 'INFO'])).includes('cluster_state:ok')) return false;
      return true;
    });
    return {
      nodes,
      nodesVariable: nodes.map((n) => `127.0.0.1:${n.port}`).join(','),
      pids: () => nodes.map((n) => n.pid()).filter((pid): pid is number => pid !== undefined && isAlive(pid)),
      async close() {
        await Promise.all(nodes.map((n) => n.kill()));
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    await Promise.all(nodes.map((n) => n.kill()));
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** One command through redis-cli, its reply lines (arrays come one element a line). */
export async function command(port: number, args: string[]): Promise<string[]> {
  const password = passwords.get(port);
  // REDISCLI_AUTH rather than -a: a password on a command line shows in ps.
  const env = password ? { ...process.env, REDISCLI_AUTH: password } : process.env;
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 5_000, env });
  return stdout.split('\n').filter((line) => line !== '');
}

/** SENTINEL REPLICAS as one map of fields per replica (redis-cli prints the nested arrays flat, a value a line). */
async function sentinelReplicas(sentinelPort: number): Promise<Array<Map<string, string>>> {
  const lines = await command(sentinelPort, ['SENTINEL', 'REPLICAS', SENTINEL_MASTER]);
  const replicas: Array<Map<string, string>> = [];
  for (let i = 0; i + 1 < lines.length; i += 2) {
    if (lines[i] === 'name') replicas.push(new Map());
    replicas.at(-1)?.set(lines[i]!, lines[i + 1]!);
  }
  return replicas;
}

async function info(port: number, section: string, args: string[] = ['INFO', section]): Promise<string> {
  return (await command(port, args).catch(() => [])).join('\n');
}

async function waitUntil(what: string, timeoutMs: number, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

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
    // A server with a password answers -NOAUTH: up all the same.
    socket.once('data', (data) => done(/^(\+PONG|-NOAUTH)/.test(data.toString('utf8'))));
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
