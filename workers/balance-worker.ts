import { Queue, Worker } from 'bullmq';
import { createRedis, type RedisClient, type RedisTarget } from '../src/redis-connection.ts';
import { refreshBalances, type BalanceRefreshPorts, type BalanceRound } from '../src/balance-watch/refresh-balances.ts';

// The balance watch's schedule, on a queue of its own (never the send queue, so a round never takes a
// send's place). Why a BullMQ job scheduler rather than a lock of our own:
// - one schedule for all worker processes on all machines, kept in Redis: every worker upserts the
//   same scheduler at start, and an upsert with an unchanged interval keeps the next run where it is,
//   so restarts and added workers never add WebSMS calls;
// - global concurrency 1: a round runs one at a time across every worker, even when one outlasts the
//   interval (the next waits for it) — no lock renewal or expiry to get right by hand;
// - a worker killed mid-round loses its job lock and BullMQ hands the round to another worker (stalled
//   job), and the dashboard (/admin/queues) can show the rounds.

export const BALANCE_QUEUE = 'user-sms-balance-watch';
const SCHEDULER_ID = 'balance-refresh';
const ROUND_JOB = 'refresh-balances';

export interface BalanceWatchOptions {
  /** for the queue's commands: the worker process's connection */
  redis: RedisClient;
  /** the watch's worker gets a connection of its own to block on */
  target: RedisTarget;
  prefix: string;
  refreshMs: number;
  concurrency: number;
}

export interface RunningBalanceWatch {
  /** Stops taking rounds; a running round starts no new WebSMS call and ends with the calls in flight. */
  stop(): Promise<void>;
}

export async function startBalanceWatch(ports: BalanceRefreshPorts, options: BalanceWatchOptions): Promise<RunningBalanceWatch> {
  const queue = new Queue(BALANCE_QUEUE, { connection: options.redis, prefix: options.prefix });
  queue.on('error', () => undefined); // surfaced through the calls that fail
  await queue.setGlobalConcurrency(1);
  // The first run is due at once when the scheduler is new (or its interval changed).
  await queue.upsertJobScheduler(
    SCHEDULER_ID,
    { every: options.refreshMs },
    {
      name: ROUND_JOB,
      data: {},
      // A failed round (PostgreSQL away) is not retried: the next one is at most one interval away.
      opts: { attempts: 1, removeOnComplete: { count: 10 }, removeOnFail: { count: 50 } },
    },
  );

  let stopping = false;
  const connection = createRedis(options.target, 'blocking', 'user-sms-balance-watch');
  connection.on('error', () => undefined); // the worker's 'error' event reports it
  const worker = new Worker<Record<string, never>, BalanceRound>(
    BALANCE_QUEUE,
    () => refreshBalances(ports, { concurrency: options.concurrency, shouldStop: () => stopping }),
    { connection, prefix: options.prefix, concurrency: 1 },
  );
  worker.on('error', (error) => ports.logger.warn({ err: error.message }, 'balance watch worker error'));
  worker.on('failed', (_job, error) => ports.logger.warn({ err: error.message }, 'balance refresh round failed'));
  await worker.waitUntilReady();

  return {
    async stop() {
      stopping = true;
      await worker.close();
      await queue.close().catch(() => undefined);
      connection.disconnect();
    },
  };
}
