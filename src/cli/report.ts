import { loadConfig } from '../config.ts';
import { createDb } from '../db/database.ts';
import { checkReportParams, MAX_REPORT_LIMIT, REPORTS } from '../reports/catalogue.ts';
import { EXIT, parseCommandLine, runCommand, UsageError } from './args.ts';
import { formatTable } from './table.ts';

// `npm run report -- <name>`: the old documentation's SQL queries as commands. This is the
// operator's terminal, so phones are shown in full, as the queries showed them; the HTTP
// endpoints (GET /reports/<name>) mask them.

const USAGE = `usage: npm run report -- <name> [--enterprise <number>] [--limit <n>] [--json]

reports:
${[...REPORTS.values()].map((r) => `  ${r.name.padEnd(11)}${r.description} (default limit ${r.defaultLimit})`).join('\n')}

  --enterprise <n>  only this enterprise's rows (required for "enterprise"; not for "audit")
  --limit <n>       at most n rows (1-${MAX_REPORT_LIMIT})
  --json            the rows as JSON on stdout

exit codes: ${EXIT.ok} ok (also when there are no rows) · ${EXIT.usage} usage or configuration · ${EXIT.unavailable} database unavailable`;

async function main(): Promise<number> {
  const { values, positionals } = parseCommandLine(process.argv.slice(2), {
    enterprise: { type: 'string' },
    limit: { type: 'string' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT.ok;
  }
  if (positionals.length !== 1) throw new UsageError('give exactly one report name');
  const name = positionals[0] ?? '';
  const report = REPORTS.get(name);
  if (!report) throw new UsageError(`unknown report "${name}"`);
  const checked = checkReportParams(report, { enterprise: values.enterprise, limit: values.limit });
  if (!checked.ok) throw new UsageError(`--${checked.field} ${checked.message}`);

  const config = loadConfig();
  const db = createDb(config.databaseUrl, { max: 1, applicationName: 'user-sms-report' });
  try {
    const rows = await report.run(db, checked.params);
    if (values.json) {
      process.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
    } else {
      process.stdout.write(`${report.description}\n\n${formatTable(report.columns, rows as Array<Record<string, unknown>>)}\n`);
    }
    return EXIT.ok;
  } finally {
    await db.destroy();
  }
}

await runCommand(USAGE, main);
