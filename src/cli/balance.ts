import { loadConfig } from '../config.ts';
import { createDb } from '../db/database.ts';
import {
  balanceHeader,
  balanceJson,
  checkBalance,
  checkEnterpriseBalance,
  findEnterprisesForBalance,
  formatBalanceCheck,
  formatSummary,
  isBelow,
  summarise,
  type BalanceCheck,
  type BalancePorts,
} from '../enterprises/balance.ts';
import { createWebsmsClient } from '../websms/client.ts';
import { EXIT, parseAmount, parseCommandLine, parsePositiveInteger, runCommand, UsageError } from './args.ts';

// `npm run balance -- <enterprise_number>`: the old `send_user_sms.sh balance <n>`, same output.
// Needs PostgreSQL and WebSMS only (no Redis), so it works while the queue is down.

const USAGE = `usage: npm run balance -- <enterprise_number> [--json] [--below <amount>]
       npm run balance -- --all [--json] [--below <amount>] [--concurrency <n>]

  --all              every active enterprise with WebSMS settings, checked concurrently
  --json             machine-readable output on stdout
  --below <amount>   exit ${EXIT.belowThreshold} when an SMS balance is under <amount> BYN (for cron alerts)
  --concurrency <n>  WebSMS calls at a time with --all (default 4)

exit codes: ${EXIT.ok} ok · ${EXIT.notFound} enterprise not found or without WebSMS settings · ${EXIT.usage} usage or configuration ·
            ${EXIT.websms} WebSMS error or timeout · ${EXIT.belowThreshold} below the --below threshold · ${EXIT.unavailable} database unavailable
  With --all the first that applies wins: ${EXIT.belowThreshold}, then ${EXIT.websms}, then ${EXIT.notFound} (a malformed custom_domain), then ${EXIT.ok}.`;

const DEFAULT_CONCURRENCY = 4;

function exitCodeOf(check: BalanceCheck, threshold: number | undefined): number {
  if (check.kind === 'not-configured') return EXIT.notFound;
  if (check.kind === 'websms-error') return EXIT.websms;
  return isBelow(check, threshold) ? EXIT.belowThreshold : EXIT.ok;
}

function exitCodeOfAll(checks: readonly BalanceCheck[], threshold: number | undefined): number {
  const codes = new Set(checks.map((c) => exitCodeOf(c, threshold)));
  for (const code of [EXIT.belowThreshold, EXIT.websms, EXIT.notFound]) if (codes.has(code)) return code;
  return EXIT.ok;
}

/** Runs `work` over items, at most `limit` at a time, handing results to `emit` in input order as soon as they are ready. */
async function inOrderBounded<T, R>(items: readonly T[], limit: number, work: (item: T) => Promise<R>, emit: (result: R) => void): Promise<R[]> {
  const results: Array<R | undefined> = new Array<R | undefined>(items.length);
  const done: boolean[] = new Array<boolean>(items.length).fill(false);
  let nextToStart = 0;
  let nextToEmit = 0;
  const lane = async () => {
    while (nextToStart < items.length) {
      const index = nextToStart++;
      results[index] = await work(items[index] as T);
      done[index] = true;
      while (nextToEmit < items.length && done[nextToEmit]) emit(results[nextToEmit++] as R);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results as R[];
}

async function main(): Promise<number> {
  const { values, positionals } = parseCommandLine(process.argv.slice(2), {
    all: { type: 'boolean', default: false },
    json: { type: 'boolean', default: false },
    below: { type: 'string' },
    concurrency: { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT.ok;
  }
  if (values.all ? positionals.length !== 0 : positionals.length !== 1) {
    throw new UsageError(values.all ? '--all takes no enterprise number' : 'give exactly one enterprise number, or --all');
  }
  const number = positionals[0];
  if (number !== undefined && (number.length < 1 || number.length > 10)) throw new UsageError('an enterprise number has 1-10 characters');
  const threshold = values.below === undefined ? undefined : parseAmount(values.below, '--below');
  const concurrency = values.concurrency === undefined ? DEFAULT_CONCURRENCY : parsePositiveInteger(values.concurrency, '--concurrency', 32);
  if (values.concurrency !== undefined && !values.all) throw new UsageError('--concurrency applies to --all only');

  const config = loadConfig();
  const db = createDb(config.databaseUrl, { max: 2, applicationName: 'user-sms-balance' });
  const websms = createWebsmsClient({ baseUrl: config.websms.baseUrl, timeoutMs: config.websms.timeoutMs, method: config.websms.method });
  const ports: BalancePorts = { db, websms };
  const out = (lines: string[]) => process.stdout.write(`${lines.join('\n')}\n`);
  try {
    if (number !== undefined) {
      if (!values.json) out([balanceHeader(number)]);
      // The operator asked for this enterprise by number: show its balance even if it is inactive.
      const check = await checkBalance(ports, number, { activeOnly: false });
      if (values.json) out([JSON.stringify(balanceJson(check, threshold), null, 2)]);
      else if (check.kind === 'ok') out(formatBalanceCheck(check, threshold));
      // Errors on stderr, as callers of the old script read them there.
      else process.stderr.write(`${formatBalanceCheck(check).join('\n')}\n`);
      return exitCodeOf(check, threshold);
    }

    const enterprises = await findEnterprisesForBalance(db);
    if (!values.json && enterprises.length === 0) out(['Нет активных предприятий с настройками WebSMS (enterprises.custom_domain)']);
    const checks = await inOrderBounded(
      enterprises,
      concurrency,
      (enterprise) => checkEnterpriseBalance(ports, enterprise),
      (check) => {
        if (!values.json) out([balanceHeader(check.enterpriseNumber), ...formatBalanceCheck(check, threshold), '']);
      },
    );
    const summary = summarise(checks, threshold);
    if (values.json) {
      out([
        JSON.stringify(
          {
            checked_at: new Date().toISOString(),
            threshold: threshold ?? null,
            summary,
            results: checks.map((c) => balanceJson(c, threshold)),
          },
          null,
          2,
        ),
      ]);
    } else {
      out([formatSummary(summary, threshold)]);
    }
    return exitCodeOfAll(checks, threshold);
  } finally {
    websms.close();
    await db.destroy();
  }
}

await runCommand(USAGE, main);
