import type { Db } from '../db/database.ts';
import { checkEnterpriseBalance, findEnterprisesForBalance, type BalancePorts } from '../enterprises/balance.ts';
import type { Logger } from '../logger.ts';
import type { BalanceCache } from './balance-cache.ts';

// One round of the balance watch: reads the WebSMS balance of every active enterprise with
// settings (the enterprises `npm run balance -- --all` checks) and records it in the cache. Runs in
// a worker process, on its own queue (workers/balance-worker.ts), never on the send path.

export interface BalanceRefreshPorts {
  db: Db;
  websms: BalancePorts['websms'];
  cache: BalanceCache;
  logger: Logger;
  now?: () => number;
}

export interface BalanceRefreshOptions {
  /** WebSMS calls at a time: modest towards WebSMS, and a round of a thousand enterprises still ends in minutes. */
  concurrency: number;
  /** Checked between enterprises: a stopping worker starts no new call (the calls in flight end within the WebSMS budget). */
  shouldStop?: () => boolean;
}

export interface BalanceRound {
  checked: number;
  failed: number;
  /** true: the round was cut short because the worker is stopping */
  interrupted: boolean;
}

/** As `npm run balance -- --all` (4 at a time). */
export const DEFAULT_REFRESH_CONCURRENCY = 4;

export async function refreshBalances(ports: BalanceRefreshPorts, options: BalanceRefreshOptions): Promise<BalanceRound> {
  const now = ports.now ?? Date.now;
  const enterprises = await findEnterprisesForBalance(ports.db);
  let next = 0;
  let checked = 0;
  let failed = 0;
  let interrupted = false;

  // Each enterprise on its own: a refusal, a timeout, even an unexpected error or a Redis write that
  // fails, is logged and counted, and the round goes on with the others.
  const refreshOne = async (index: number) => {
    const enterprise = enterprises[index]!;
    let ok = false;
    try {
      const check = await checkEnterpriseBalance(ports, enterprise);
      if (check.kind === 'ok') {
        await ports.cache.recordBalance(enterprise.number, { sms: check.sms, viber: check.viber }, now());
        ok = true;
      } else {
        // websms-error messages are scrubbed of the key (balance.ts); not-configured: a malformed custom_domain.
        const reason = check.kind === 'websms-error' ? { code: check.code, err: check.message } : { code: 'not_configured' };
        ports.logger.warn({ enterprise: enterprise.number, ...reason }, 'balance refresh failed');
        await ports.cache.recordFailure(enterprise.number, now());
      }
    } catch (error) {
      ports.logger.warn({ enterprise: enterprise.number, err: error instanceof Error ? error.message : String(error) }, 'balance refresh failed');
      await ports.cache.recordFailure(enterprise.number, now()).catch(() => undefined);
    }
    checked += 1;
    if (!ok) failed += 1;
  };
  const lane = async () => {
    while (next < enterprises.length) {
      if (options.shouldStop?.()) {
        interrupted = true;
        return;
      }
      await refreshOne(next++);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency, enterprises.length)) }, lane));

  if (!interrupted) {
    // An enterprise that was deactivated or lost its settings leaves the cache, and its gauges /metrics.
    await ports.cache.retainOnly(new Set(enterprises.map((e) => e.number)));
    await ports.cache.recordRound({ endedAtMs: now(), checked, failed });
  }
  const round = { checked, failed, interrupted };
  ports.logger.info(round, 'balance refresh round');
  return round;
}
