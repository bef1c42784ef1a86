import type { Db } from '../db/database.ts';
import { checkEnterpriseBalance, findEnterprisesForBalance, type BalancePorts } from '../enterprises/balance.ts';
import type { Enterprise } from '../enterprises/repository.ts';
import type { Logger } from '../logger.ts';
import type { BalanceCache } from './balance-cache.ts';

// One round of the balance watch: reads the WebSMS balance of every active enterprise with
// settings (the enterprises `npm run balance -- --all` checks) and records it in the cache. Runs in
// a worker process, on its own queue (workers/balance-worker.ts), never on the send path.
//
// A balance belongs to a WebSMS account (user and API key), not to an enterprise: enterprises that
// share an account share its figure. So a round asks once per account and records the answer for
// each of its enterprises; a thousand enterprises on one account cost one call, not a thousand.

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
  const accounts = groupByAccount(enterprises);
  let next = 0;
  let checked = 0;
  let failed = 0;
  let interrupted = false;

  // Each account on its own: a refusal, a timeout, even an unexpected error or a Redis write that
  // fails, is logged and counted (for each of its enterprises), and the round goes on with the others.
  const refreshAccount = async (index: number) => {
    const group = accounts[index]!;
    const numbers = group.map((enterprise) => enterprise.number);
    let ok = false;
    try {
      const check = await checkEnterpriseBalance(ports, group[0]!);
      if (check.kind === 'ok') {
        await ports.cache.recordBalances(numbers, { sms: check.sms, viber: check.viber }, now());
        ok = true;
      } else {
        // websms-error messages are scrubbed of the key (balance.ts); not-configured: a malformed custom_domain.
        const reason = check.kind === 'websms-error' ? { code: check.code, err: check.message } : { code: 'not_configured' };
        ports.logger.warn({ enterprise: enterpriseList(numbers), ...reason }, 'balance refresh failed');
        await ports.cache.recordFailures(numbers, now());
      }
    } catch (error) {
      ports.logger.warn({ enterprise: enterpriseList(numbers), err: error instanceof Error ? error.message : String(error) }, 'balance refresh failed');
      await ports.cache.recordFailures(numbers, now()).catch(() => undefined);
    }
    checked += numbers.length;
    if (!ok) failed += numbers.length;
  };
  const lane = async () => {
    while (next < accounts.length) {
      if (options.shouldStop?.()) {
        interrupted = true;
        return;
      }
      await refreshAccount(next++);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.concurrency, accounts.length)) }, lane));

  if (!interrupted) {
    // An enterprise that was deactivated or lost its settings leaves the cache, and its gauges /metrics.
    await ports.cache.retainOnly(new Set(enterprises.map((e) => e.number)));
    await ports.cache.recordRound({ endedAtMs: now(), checked, failed });
  }
  const round = { checked, failed, interrupted };
  ports.logger.info(round, 'balance refresh round');
  return round;
}

/**
 * Enterprises by WebSMS account (user and API key), in the order of their first enterprise. An
 * enterprise without usable settings is a group of its own (it fails alone, as before).
 */
export function groupByAccount(enterprises: readonly Enterprise[]): Enterprise[][] {
  const groups = new Map<string, Enterprise[]>();
  for (const enterprise of enterprises) {
    const { credentials } = enterprise;
    // JSON of the pair: no separator a user or key could contain can make two accounts one.
    const key = credentials ? JSON.stringify([credentials.user, credentials.apiKey]) : `\u0000${enterprise.number}`;
    const group = groups.get(key);
    if (group) group.push(enterprise);
    else groups.set(key, [enterprise]);
  }
  return [...groups.values()];
}

/** A log names a few of an account's enterprises, not thousands. */
function enterpriseList(numbers: readonly string[]): string {
  const shown = numbers.slice(0, 5).join(', ');
  return numbers.length > 5 ? `${shown} and ${numbers.length - 5} more` : shown;
}
