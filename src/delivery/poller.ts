import type { Db } from '../db/database.ts';
import { findEnterprises, type Enterprise } from '../enterprises/repository.ts';
import type { Logger } from '../logger.ts';
import type { LookupOutcome, WebsmsClient } from '../websms/client.ts';
import { claimDueChecks, postponeChecks, recordChecks, type CheckResult, type DueCheck } from './delivery-repository.ts';
import { deliveryStatusOf, isFinalDelivery, type FinalDeliveryStatus } from './delivery-status.ts';
import { createPeriodicTask } from '../periodic-task.ts';

// Delivery status: after WebSMS accepts a message, its status/sms is asked on a schedule until it is
// final. Runs in every worker process; the rows are the queue (delivery-repository.ts), so:
// - it never touches the send path: no rate-limit slot, no send job, its own small batches;
// - a Redis that loses its data loses nothing of it, and a worker that dies mid-check only delays
//   the check by its lease;
// - each enterprise's look-ups are modest: one at a time per account, a few accounts at a time, and
//   WebSMS's error 7 ("too many requests") postpones that account's checks by `backoffMs`.
// A round costs PostgreSQL three statements whatever its size: the claim, the enterprises' settings,
// and the results, recorded together once every look-up of the round is done (a worker that dies
// before leaves them to be asked again when their lease ends).

export interface DeliveryPollerDeps {
  db: Db;
  websms: Pick<WebsmsClient, 'lookupByMessageId' | 'lookupByCustomId'>;
  logger: Logger;
  /** The messages whose delivery status a round made final (metrics), all at once. */
  onFinal?: (finals: FinalDelivery[]) => Promise<void> | void;
}

export interface FinalDelivery {
  messageId: number;
  enterpriseNumber: string;
  status: FinalDeliveryStatus;
  sentAt: Date | null;
}

export interface DeliveryPollerOptions {
  /** delays after the send at which a message is checked (DELIVERY_POLL_SCHEDULE_MS) */
  scheduleMs: readonly number[];
  /** how often a worker looks for due checks */
  intervalMs: number;
  /** checks claimed per round */
  batchSize: number;
  /** a claimed check not recorded within this comes back (its worker died) */
  leaseMs: number;
  /** after error 7 on an account, its checks wait this long */
  backoffMs: number;
  /** accounts asked at the same time */
  accountConcurrency: number;
}

export interface DeliveryPoller {
  /** One round: claims due checks and asks WebSMS; returns how many look-ups it made. */
  pollOnce(): Promise<number>;
  start(): void;
  stop(): Promise<void>;
}

const TOO_MANY_REQUESTS = 7;

function checkResult(lookup: LookupOutcome): CheckResult {
  if (lookup.kind === 'found') return { kind: 'status', code: lookup.statusCode, status: deliveryStatusOf(lookup.statusCode) };
  return lookup.kind === 'not-found' ? { kind: 'not-found' } : { kind: 'failed' };
}

export function createDeliveryPoller(deps: DeliveryPollerDeps, options: DeliveryPollerOptions): DeliveryPoller {
  async function pollOnce(): Promise<number> {
    const due = await claimDueChecks(deps.db, { limit: options.batchSize, leaseMs: options.leaseMs, scheduleMs: options.scheduleMs });
    if (due.length === 0) return 0;
    const enterprises = await findEnterprises(deps.db, due.map((check) => check.enterpriseNumber));
    const byAccount = new Map<string, DueCheck[]>();
    for (const check of due) byAccount.set(check.enterpriseNumber, [...(byAccount.get(check.enterpriseNumber) ?? []), check]);
    const accounts = [...byAccount.entries()];
    const results: Array<{ check: DueCheck; lookup: LookupOutcome }> = [];
    let asked = 0;
    const next = async (): Promise<void> => {
      for (let entry = accounts.shift(); entry; entry = accounts.shift()) asked += await pollAccount(entry[0], enterprises.get(entry[0]), entry[1], results);
    };
    await Promise.all(Array.from({ length: Math.min(options.accountConcurrency, accounts.length) }, next));
    await record(results);
    return asked;
  }

  /** One enterprise's due checks, one look-up at a time; the answers go into `results`. */
  async function pollAccount(enterpriseNumber: string, enterprise: Enterprise | undefined, checks: DueCheck[], results: Array<{ check: DueCheck; lookup: LookupOutcome }>): Promise<number> {
    const credentials = enterprise?.credentials;
    let asked = 0;
    for (const [index, check] of checks.entries()) {
      let lookup: LookupOutcome;
      if (!credentials) {
        // Its settings are gone: nobody can ask any more. The checks run out into `unknown`.
        lookup = { kind: 'failed', reason: 'enterprise has no WebSMS configuration' };
      } else if (check.websmsMessageId !== null) {
        lookup = await deps.websms.lookupByMessageId(credentials, check.websmsMessageId);
        asked += 1;
      } else if (check.providerRef !== null) {
        lookup = await deps.websms.lookupByCustomId(credentials, check.providerRef);
        asked += 1;
      } else {
        lookup = { kind: 'not-found' };
      }
      if (lookup.kind === 'failed' && lookup.providerCode === TOO_MANY_REQUESTS) {
        const rest = checks.slice(index).map((c) => c.id);
        await postponeChecks(deps.db, rest, options.backoffMs);
        deps.logger.warn({ enterprise: enterpriseNumber, postponed: rest.length, backoffMs: options.backoffMs }, 'WebSMS asked to slow down (error 7): delivery checks of this account postponed');
        return asked;
      }
      if (lookup.kind === 'failed') deps.logger.warn({ messageId: check.id, enterprise: check.enterpriseNumber, err: lookup.reason }, 'delivery status look-up failed');
      results.push({ check, lookup });
    }
    return asked;
  }

  async function record(results: ReadonlyArray<{ check: DueCheck; lookup: LookupOutcome }>): Promise<void> {
    const checks = results.map(({ check, lookup }) => ({ id: check.id, result: checkResult(lookup) }));
    const recorded = await recordChecks(deps.db, checks, options.scheduleMs);
    const byId = new Map(results.map((r) => [r.check.id, r]));
    const finals: FinalDelivery[] = [];
    for (const row of recorded) {
      const { deliveryStatus: status } = row;
      if (!isFinalDelivery(status)) continue;
      const { check, lookup } = byId.get(row.id)!;
      // Delivered is the rule (the row, /metrics and the report count it); the exceptions are logged.
      const level = status === 'delivered' ? 'debug' : 'info';
      if (deps.logger.isLevelEnabled(level)) {
        deps.logger[level]({ messageId: check.id, enterprise: check.enterpriseNumber, deliveryStatus: status, code: lookup.kind === 'found' ? lookup.statusCode : null }, 'delivery status final');
      }
      finals.push({ messageId: check.id, enterpriseNumber: check.enterpriseNumber, status, sentAt: check.sentAt });
    }
    if (finals.length === 0) return;
    try {
      await deps.onFinal?.(finals);
    } catch (error) {
      deps.logger.warn({ messages: finals.length, err: error instanceof Error ? error.message : String(error) }, 'delivery status follow-up failed');
    }
  }

  const task = createPeriodicTask(pollOnce, { intervalMs: options.intervalMs, logger: deps.logger, failure: 'delivery poll failed; will try again' });

  return {
    pollOnce,
    start: task.start,
    stop: task.stop,
  };
}
