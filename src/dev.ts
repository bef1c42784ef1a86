import { sql } from 'kysely';
import pinoPretty from 'pino-pretty';
import { loadConfig } from './config.ts';
import { createDb } from './db/database.ts';
import { migrateToLatest } from './db/migrate.ts';
import { createLogger } from './logger.ts';
import { startApi, startWorker } from './roles.ts';
import { startSandbox } from './websms/sandbox.ts';

// `npm run dev`: the whole service against the WebSMS sandbox, with a demo enterprise 0367, so the
// README's curl example works on a fresh machine. Never points at the real WebSMS.

const DEMO_ENTERPRISE = { number: '0367', name: 'june', user: 'demo@sandbox.local', apiKey: 'sandbox-demo-key' };

const sandbox = await startSandbox({
  port: Number(process.env.SANDBOX_PORT ?? 8099),
  accounts: [{ user: DEMO_ENTERPRISE.user, apiKey: DEMO_ENTERPRISE.apiKey, sms: 39.056508, viber: 0 }],
  latencyMs: Number(process.env.SANDBOX_LATENCY_MS ?? 50),
  // Long enough to watch a message go queued → accepted by operator → delivered.
  deliveryMs: Number(process.env.SANDBOX_DELIVERY_MS ?? 20_000),
});
const config = loadConfig({ ...process.env, WEBSMS_BASE_URL: sandbox.url });
// Human-readable lines for a person at a terminal, through pino's own pretty printer (a dev
// dependency, imported only here). Redaction happens in pino before the printer sees a line; the
// service proper (npm start) keeps writing one JSON object per line for log collectors.
const logger = createLogger(
  config.logLevel,
  pinoPretty({ colorize: process.stdout.isTTY, translateTime: 'SYS:HH:MM:ss.l', ignore: 'pid,hostname', singleLine: true, sync: true }),
);

const db = createDb(config.databaseUrl, { max: 1 });
await migrateToLatest(db);
await db
  .insertInto('enterprises')
  .values({ number: DEMO_ENTERPRISE.number, name: DEMO_ENTERPRISE.name, custom_domain: `${DEMO_ENTERPRISE.user} ${DEMO_ENTERPRISE.apiKey}`, active: true })
  .onConflict((oc) => oc.column('number').doUpdateSet({ custom_domain: sql`excluded.custom_domain`, active: true }))
  .execute();
await db.destroy();

const worker = await startWorker(config, logger);
const api = await startApi(config, logger);
logger.info({ api: api.url, sandbox: sandbox.url, enterprise: DEMO_ENTERPRISE.number }, 'dev service ready (WebSMS sandbox)');

const stop = () => {
  Promise.all([api.stop(), worker.stop()])
    .then(() => sandbox.close())
    .then(() => process.exit(0), () => process.exit(1));
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
