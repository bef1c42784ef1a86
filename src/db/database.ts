import { Kysely, PostgresDialect, sql, type ColumnType, type Generated, type RawBuilder } from 'kysely';
import pg from 'pg';

/**
 * Glossary
 * - message: one SMS a caller asked to send, one row of `user_sms_send`; the row is the truth.
 * - enterprise: the tenant that sends; its WebSMS credentials live in `enterprises.custom_domain`.
 * - provider reference (`provider_ref`): our unique `custom_id` for WebSMS, stored before the first
 *   call, used to look a message up when the outcome of a call is unknown.
 * - send attempt: one call to WebSMS `send/sms`; each takes a slot of the enterprise's rate limit.
 */

/** Message states, forward only: pending → queued → sending → success | failed | unknown. */
export type MessageStatus = 'pending' | 'queued' | 'sending' | 'success' | 'failed' | 'unknown';

/** Whether the SMS reached the phone, as WebSMS's status/sms says (src/delivery/). */
export type DeliveryStatus = 'pending' | 'delivered' | 'undelivered' | 'unknown';

export interface UserSmsSendTable {
  id: Generated<string>; // BIGSERIAL: pg returns int8 as a string
  enterprise_number: string;
  enterprise_name: string | null;
  phone: string;
  text: string;
  sender: string | null;
  message_id: string | null; // BIGINT from WebSMS
  custom_id: string | null;
  status: MessageStatus;
  price: ColumnType<string | null, number | null, number | null>; // DECIMAL(10,6)
  parts: number | null;
  amount: ColumnType<string | null, number | null, number | null>;
  error_message: string | null;
  service_name: string | null;
  request_ip: string | null;
  user_agent: string | null;
  response_data: ColumnType<unknown, string | null, string | null>; // JSONB
  created_at: ColumnType<Date, never, never>; // TIMESTAMP without time zone, server-local
  sent_at: ColumnType<Date | null, never, never>;
  // Added by this service:
  provider_ref: string | null;
  attempts: ColumnType<number, never, number>;
  error_code: string | null;
  not_before: ColumnType<Date | null, Date | null, Date | null>;
  claimed_at: ColumnType<Date | null, never, never>;
  updated_at: ColumnType<Date, never, never>;
  idempotency_key: string | null;
  request_hash: string | null;
  resent_after_unknown: ColumnType<boolean, never, boolean>;
  /** operator retries and drops, appended as {action, at, by, from, to, job, reason} */
  operator_actions: ColumnType<unknown, never, never>;
  /** SHA-256 of each key a caller was given in a status_url (messages/status-key.ts) */
  status_key_hashes: ColumnType<Buffer[] | null, Buffer[] | null, Buffer[] | null>;
  /** where the message's events go (src/callbacks) */
  callback_url: string | null;
  /** pending | delivered | undelivered | unknown (src/delivery/); NULL: never asked */
  delivery_status: DeliveryStatus | null;
  delivery_code: number | null;
  delivered_at: ColumnType<Date | null, never, never>;
  delivery_checks: ColumnType<number, never, number>;
}

/** A message whose delivery status is still asked about, and when next (src/delivery/). */
export interface DeliveryDueTable {
  message_id: string;
  due_at: ColumnType<Date, RawBuilder<unknown>, RawBuilder<unknown>>;
}

export interface EnterprisesTable {
  number: string;
  name: string | null;
  custom_domain: string | null;
  active: boolean | null;
}

export interface Database {
  user_sms_send: UserSmsSendTable;
  enterprises: EnterprisesTable;
  delivery_due: DeliveryDueTable;
}

export type Db = Kysely<Database>;

export interface DbOptions {
  max?: number;
  /** Fail fast when PostgreSQL is unreachable instead of letting callers hang. */
  connectionTimeoutMs?: number;
  statementTimeoutMs?: number;
  applicationName?: string;
}

/**
 * How much longer pg waits for an answer (query_timeout) than PostgreSQL lets a statement run
 * (statement_timeout): a slow statement fails with PostgreSQL's own error, and only a connection that
 * stopped answering meets pg's deadline.
 */
export const ANSWER_GRACE_MS = 1_000;

const DEFAULT_STATEMENT_TIMEOUT_MS = 10_000;

/** Each database's statement_timeout (settledAfterMs), by the Kysely instance createDb made. */
const statementTimeouts = new WeakMap<Db, number>();

/**
 * How long after a statement was sent its outcome is settled whatever became of its answer: by then
 * PostgreSQL has finished it (statement_timeout), or a transaction waiting for its next statement has
 * been rolled back (idle_in_transaction_session_timeout), with the grace for the way there. pg gives up
 * on an answer at the same moment (query_timeout).
 */
export function settledAfterMs(db: Db): number {
  return (statementTimeouts.get(db) ?? DEFAULT_STATEMENT_TIMEOUT_MS) + ANSWER_GRACE_MS;
}

/**
 * An error from PostgreSQL itself (it has a SQLSTATE): the statement failed and changed nothing. Any
 * other error from a statement already sent (a reset, pg's query_timeout) leaves its outcome unknown.
 */
export function isServerError(error: unknown): boolean {
  return error instanceof pg.DatabaseError;
}

export function createDb(databaseUrl: string, options: DbOptions = {}): Db {
  const statementTimeoutMs = options.statementTimeoutMs ?? DEFAULT_STATEMENT_TIMEOUT_MS;
  const pool = new pg.Pool({
    connectionString: databaseUrl,
    max: options.max ?? 10,
    connectionTimeoutMillis: options.connectionTimeoutMs ?? 3_000,
    statement_timeout: statementTimeoutMs,
    query_timeout: statementTimeoutMs + ANSWER_GRACE_MS,
    // A transaction whose next statement has not arrived by then is rolled back, with its session:
    // its COMMIT, held up in the network past pg's deadline, can then never commit what the caller
    // has already been told failed. (statement_timeout + ANSWER_GRACE_MS after the COMMIT was sent
    // is later than statement_timeout after the session went idle.)
    idle_in_transaction_session_timeout: statementTimeoutMs,
    application_name: options.applicationName ?? 'user-sms',
    idleTimeoutMillis: 30_000,
  });
  // An idle client losing its connection (server restart) must not crash the process.
  pool.on('error', () => undefined);
  // Nor a client in use: pg-pool listens for errors on idle clients only, and a checked-out client
  // whose socket dies (reset mid-query) emits 'error' with no listener, which kills the process. The
  // query itself still fails with the error (a 503 / a job retry), and the pool drops the client on
  // release because it is no longer queryable. Found by test/faults/postgres-outage.test.ts.
  pool.on('connect', (client) => client.on('error', () => undefined));
  pool.on('connect', prepareRepeatedStatements);
  pool.on('connect', watchLostAnswers);
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool }) });
  statementTimeouts.set(db, statementTimeoutMs);
  return db;
}

/** The server process that ran each statement whose answer was lost before pg's read timeout (endLostStatement). */
const lostAnswerBackends = new WeakMap<object, number>();

/**
 * A statement whose answer pg stopped waiting for (query_timeout) is still the connection's active
 * one: every later statement on it would queue behind an answer that may never come (a transaction's
 * ROLLBACK, or whoever the pool hands the connection to next). The connection is closed instead, so
 * the pool drops it and the next statement gets a sound one. Any other lost answer (a reset) names
 * the server process that ran the statement, which may still be running it (endLostStatement).
 */
function watchLostAnswers(client: pg.PoolClient): void {
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  const backend = (client as pg.PoolClient & { processID?: number | null }).processID;
  client.query = ((...args: unknown[]) => {
    const result = query(...args);
    if (result instanceof Promise) {
      result.then(undefined, (error: unknown) => {
        if (!(error instanceof Error) || isServerError(error)) return;
        if (error.message === 'Query read timeout') void client.end().catch(() => undefined);
        else if (typeof backend === 'number') lostAnswerBackends.set(error, backend);
      });
    }
    return result;
  }) as typeof client.query;
}

/**
 * Settles a statement whose answer was lost before pg's read timeout (`error`, sent `sentAgoMs` ago):
 * ends the server process that ran it, when that is still the process (it started before the
 * statement was sent, so a later one given the same pid is left alone), and waits until it is gone.
 * Its outcome is then final now, committed or rolled back, instead of after settledAfterMs. False when
 * that cannot be done (the process is not known, PostgreSQL is out of reach, the role may not end
 * it): the caller waits instead.
 */
export async function endLostStatement(db: Db, error: unknown, sentAgoMs: number): Promise<boolean> {
  const backend = typeof error === 'object' && error !== null ? lostAnswerBackends.get(error) : undefined;
  if (backend === undefined) return false;
  const waitMs = Math.max(1, Math.ceil(settledAfterMs(db) - sentAgoMs));
  try {
    const { rows } = await sql<{ ended: boolean }>`
      SELECT coalesce((SELECT pg_terminate_backend(pid, ${waitMs}::bigint) FROM pg_stat_activity
                       WHERE pid = ${backend} AND backend_start < now() - make_interval(secs => ${sentAgoMs / 1000})), true) AS ended`.execute(db);
    return rows[0]?.ended === true;
  } catch {
    return false;
  }
}

/** Distinct statements a connection keeps prepared; past this, statements go unnamed as before. */
const PREPARED_PER_CONNECTION = 200;

/**
 * Kysely sends every statement unnamed, so PostgreSQL parses, analyses and plans it again on each
 * call. On user_sms_send, with its dozen indexes, that is about half of the server's CPU for a
 * one-row UPDATE (npm run bench: PostgreSQL CPU per message 2.1 → 1.45 ms). Naming each distinct
 * parameterised DML statement, per connection, lets PostgreSQL keep it parsed and reuse its plan.
 * Left unnamed: statements without parameters (DDL, BEGIN/COMMIT, migrations), and any `*`
 * select list, whose cached plan would fail ("must not change result type") once a migration
 * adds a column while the process runs. A pooler in transaction mode must support prepared
 * statements (PgBouncer ≥ 1.21 with max_prepared_statements).
 */
function prepareRepeatedStatements(client: pg.PoolClient): void {
  const names = new Map<string, string>();
  const query = client.query.bind(client) as (...args: unknown[]) => unknown;
  const named = (text: string): string | undefined => {
    let name = names.get(text);
    if (name === undefined && names.size < PREPARED_PER_CONNECTION && /^\s*(select|insert|update|delete|with)\b/i.test(text) && !text.replaceAll('count(*)', '').includes('*')) {
      name = `s${names.size}`;
      names.set(text, name);
    }
    return name;
  };
  client.query = ((config: unknown, values?: unknown, callback?: unknown) => {
    if (typeof config === 'string' && Array.isArray(values) && values.length > 0 && callback === undefined) {
      const name = named(config);
      if (name !== undefined) return query({ name, text: config, values });
    }
    return query(config, values, callback);
  }) as typeof client.query;
}
