import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, type Config } from './config.ts';
import { createDb } from './db/database.ts';
import { migrateToLatest } from './db/migrate.ts';
import { createLogger, type Logger } from './logger.ts';
import { startApi, startBackground, startWorker, type Running } from './roles.ts';

// Process entry: `node src/run.mjs src/main.ts [all|api|worker|background]`.
//   all        — migrations, the API, and the processes it supervises (npm start): WORKER_PROCESSES
//                workers that send, and one background process for the rest of the work
//   api        — migrations and the API only
//   worker     — one worker process: sends, and the background work too unless WORKER_BACKGROUND=false
//   background — the background work alone (delivery look-ups, callbacks, sweepers, balances), at a
//                lower CPU priority (BACKGROUND_NICE)
// SIGTERM/SIGINT drain: the API stops accepting and answers its waiting callers; workers finish
// their running jobs. Nothing queued is lost: it stays in Redis and in PostgreSQL.

const role = process.argv[2] ?? 'all';
if (!['all', 'api', 'worker', 'background'].includes(role)) {
  console.error(`unknown role "${role}": use all, api, worker or background`);
  process.exit(2);
}

let config: Config;
try {
  config = loadConfig();
} catch (error) {
  console.error(error instanceof ConfigError ? error.message : error);
  process.exit(2);
}
const logger = createLogger(config.logLevel).child({ role });

async function migrate(): Promise<void> {
  const db = createDb(config.databaseUrl, { max: 1, applicationName: 'user-sms-migrate' });
  try {
    const results = await migrateToLatest(db);
    for (const r of results) logger.info({ migration: r.migrationName, status: r.status }, 'migration');
  } finally {
    await db.destroy();
  }
}

/**
 * The processes of the `all` role: `workers` that send (their background work left to the one
 * background process), restarted when they die, stopped with the service.
 */
function superviseWorkers(workers: number): Running {
  const entry = fileURLToPath(new URL('./run.mjs', import.meta.url));
  const main = fileURLToPath(import.meta.url);
  const children = new Set<ChildProcess>();
  let stopping = false;

  const spawn = (role: 'worker' | 'background', slot: number, restarts: number) => {
    const child = fork(entry, [main, role], { stdio: 'inherit', env: role === 'worker' ? { ...process.env, WORKER_BACKGROUND: 'false' } : process.env });
    children.add(child);
    child.on('exit', (code, signal) => {
      children.delete(child);
      if (stopping) return;
      const delayMs = Math.min(30_000, 500 * 2 ** restarts);
      logger.error({ process: role, slot, code, signal, restartInMs: delayMs }, `${role} process exited; restarting`);
      setTimeout(() => spawn(role, slot, restarts + 1), delayMs).unref();
    });
  };
  for (let slot = 0; slot < workers; slot += 1) spawn('worker', slot, 0);
  spawn('background', 0, 0);

  return {
    async stop() {
      stopping = true;
      await Promise.all(
        [...children].map(
          (child) =>
            new Promise<void>((resolve) => {
              if (child.exitCode !== null || child.signalCode !== null) return resolve();
              child.once('exit', () => resolve());
              child.kill('SIGTERM');
            }),
        ),
      );
    },
  };
}

async function run(): Promise<Running[]> {
  if (role === 'worker') return [await startWorker(config, logger)];
  if (role === 'background') return [await startBackground(config, logger)];
  await migrate();
  const api = await startApi(config, logger);
  if (role === 'api') return [api];
  return [api, superviseWorkers(Math.max(1, config.worker.processes))];
}

// A worker forked by `all` drains when its supervisor is gone (even killed with -9): it must not
// run on unsupervised, and the supervisor's replacement will start its own workers. The supervisor
// can be gone before this process has finished starting, so that is watched from the first moment
// and acted on once there is something to drain.
let supervisorGone: (() => void) | undefined;
let supervisorGoneEarly = false;
if (process.send) {
  process.once('disconnect', () => {
    if (supervisorGone) supervisorGone();
    else supervisorGoneEarly = true;
  });
}

try {
  const running = await run();
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'draining');
    // A drain that cannot finish (a hung dependency) must still end the process.
    setTimeout(() => {
      logger.error('drain took too long; exiting');
      process.exit(1);
    }, config.websms.timeoutMs + 15_000).unref();
    Promise.all(running.map((r) => r.stop())).then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error instanceof Error ? error.message : String(error) }, 'error while draining');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  supervisorGone = () => shutdown('supervisor exited');
  if (supervisorGoneEarly) supervisorGone();
} catch (error) {
  logFatal(logger, error);
  process.exit(1);
}

function logFatal(log: Logger, error: unknown): void {
  log.fatal({ err: error instanceof Error ? error.message : String(error) }, 'start-up failed');
}
