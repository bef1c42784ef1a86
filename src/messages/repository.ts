import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { Db, MessageStatus } from '../db/database.ts';
import type { MessageRecord } from './message.ts';
import type { ServerClock } from '../db/server-clock.ts';

// All SQL on user_sms_send. Every state change is a conditional UPDATE on the current status, so
// the state machine only moves forward whatever races between workers, the sweeper and operators.

const UNFINISHED: MessageStatus[] = ['pending', 'queued', 'sending'];
const WAITING: MessageStatus[] = ['pending', 'queued'];

export interface NewMessage {
  enterpriseNumber: string;
  enterpriseName: string | null;
  phone: string;
  text: string;
  sender: string | null;
  customId: string | null;
  serviceName: string | null;
  requestIp: string | null;
  userAgent: string | null;
  /** the SHA-256 of the key in the answer's status_url (status-key.ts); refused requests have none */
  statusKeySha256?: Buffer;
  /** where its events go (src/callbacks); null or absent: none */
  callbackUrl?: string | null;
}

/**
 * Our `custom_id` for WebSMS: unique per message, at most 20 characters (WebSMS's limit), stored
 * before the first call so that an unknown outcome can be looked up (80 random bits).
 */
export function newProviderRef(): string {
  return `u${randomBytes(10).toString('base64url').slice(0, 13)}`;
}

function newMessageValues(message: NewMessage) {
  return {
    enterprise_number: message.enterpriseNumber,
    enterprise_name: message.enterpriseName,
    phone: message.phone,
    text: message.text,
    sender: message.sender,
    custom_id: message.customId,
    service_name: message.serviceName,
    request_ip: message.requestIp,
    user_agent: message.userAgent,
    status_key_hashes: message.statusKeySha256 ? [message.statusKeySha256] : null,
    callback_url: message.callbackUrl ?? null,
  };
}

export async function insertPendingMessage(db: Db, message: NewMessage): Promise<number> {
  const row = await db
    .insertInto('user_sms_send')
    .values({ ...newMessageValues(message), status: 'pending', provider_ref: newProviderRef() })
    .returning('id')
    .executeTakeFirstOrThrow();
  return Number(row.id);
}

/** A request refused before sending (unknown enterprise …): recorded for the audit, never sent. */
export async function insertRefusedMessage(db: Db, message: NewMessage, error: string, errorCode: string): Promise<number> {
  const row = await db
    .insertInto('user_sms_send')
    // Refused: the caller gets no status link for it.
    .values({ ...newMessageValues(message), status_key_hashes: null, status: 'failed', error_message: error, error_code: errorCode })
    .returning('id')
    .executeTakeFirstOrThrow();
  return Number(row.id);
}

// TIMESTAMP columns hold server-local wall time (the old service's convention, kept for its
// reports); reading them "AT TIME ZONE" the session's zone turns them into real instants.
const localInstant = (column: 'created_at' | 'sent_at') =>
  sql<Date | null>`${sql.ref(column)} AT TIME ZONE current_setting('TimeZone')`.as(column);

export async function findMessage(db: Db, id: number): Promise<MessageRecord | undefined> {
  const row = await db
    .selectFrom('user_sms_send')
    .select([
      'id',
      'enterprise_number',
      'enterprise_name',
      'phone',
      'sender',
      'custom_id',
      'status',
      'message_id',
      'price',
      'parts',
      'amount',
      'error_message',
      'error_code',
      'attempts',
      'service_name',
      localInstant('created_at'),
      localInstant('sent_at'),
      'updated_at',
      'not_before',
      'resent_after_unknown',
      'status_key_hashes',
      'delivery_status',
      'delivered_at',
    ])
    .where('id', '=', String(id))
    .executeTakeFirst();
  if (!row) return undefined;
  return {
    id: Number(row.id),
    enterpriseNumber: row.enterprise_number,
    enterpriseName: row.enterprise_name,
    phone: row.phone,
    sender: row.sender,
    customId: row.custom_id,
    status: row.status,
    websmsMessageId: row.message_id === null ? null : Number(row.message_id),
    price: row.price === null ? null : Number(row.price),
    parts: row.parts,
    amount: row.amount === null ? null : Number(row.amount),
    error: row.error_message,
    errorCode: row.error_code,
    attempts: row.attempts,
    serviceName: row.service_name,
    createdAt: row.created_at,
    sentAt: row.sent_at,
    updatedAt: row.updated_at,
    notBefore: row.not_before,
    resentAfterUnknown: row.resent_after_unknown,
    statusKeyHashes: row.status_key_hashes ?? [],
    deliveryStatus: row.delivery_status,
    deliveredAt: row.delivered_at,
  };
}

/**
 * One more status key for a message (an Idempotency-Key replay: the first answer, and its link, may
 * have been lost). The newest `keep` are kept, so replays cannot grow the row without bound.
 */
export async function addStatusKeyHash(db: Db, id: number, sha256: Buffer, keep: number): Promise<void> {
  await sql`
    UPDATE user_sms_send
    SET status_key_hashes = (coalesce(status_key_hashes, '{}') || ${[sha256]}::bytea[])[greatest(1, coalesce(cardinality(status_key_hashes), 0) + 2 - ${keep}):]
    WHERE id = ${String(id)}`.execute(db);
}

/** The enterprise's window is full: the message waits, and the row says until when. */
export async function markWaitingForSlot(db: Db, id: number, notBefore: Date): Promise<void> {
  await db
    .updateTable('user_sms_send')
    .set({ status: 'queued', not_before: notBefore, updated_at: sql`now()` })
    .where('id', '=', String(id))
    .where('status', 'in', WAITING)
    .execute();
}

export interface ClaimedMessage {
  id: number;
  enterpriseNumber: string;
  phone: string;
  text: string;
  sender: string | null;
  providerRef: string;
  attempts: number;
  /** read in the same statement, so a send always uses the credentials current at send time */
  customDomain: string | null;
  enterpriseActive: boolean | null;
}

/**
 * pending|queued → sending, counting the attempt. Only one claimant can win; a row already
 * `sending` or finished is never claimed again (it may have been sent: see reconciliation).
 */
export async function claimForSending(db: Db, id: number): Promise<ClaimedMessage | undefined> {
  const row = await db
    .updateTable('user_sms_send')
    .set({
      status: 'sending',
      attempts: sql`attempts + 1`,
      claimed_at: sql`now()`,
      not_before: null,
      updated_at: sql`now()`,
      // Rows written by the old service have no reference; give one before the first call.
      provider_ref: sql`coalesce(provider_ref, ${newProviderRef()})`,
    })
    .where('id', '=', String(id))
    .where('status', 'in', WAITING)
    .returning((eb) => [
      'id',
      'enterprise_number',
      'phone',
      'text',
      'sender',
      'provider_ref',
      'attempts',
      eb
        .selectFrom('enterprises')
        .select('custom_domain')
        .whereRef('enterprises.number', '=', 'user_sms_send.enterprise_number')
        .limit(1)
        .as('custom_domain'),
      eb
        .selectFrom('enterprises')
        .select('active')
        .whereRef('enterprises.number', '=', 'user_sms_send.enterprise_number')
        .limit(1)
        .as('enterprise_active'),
    ])
    .executeTakeFirst();
  if (!row) return undefined;
  return {
    id: Number(row.id),
    enterpriseNumber: row.enterprise_number,
    phone: row.phone,
    text: row.text,
    sender: row.sender,
    providerRef: row.provider_ref as string,
    attempts: row.attempts,
    customDomain: row.custom_domain,
    enterpriseActive: row.enterprise_active,
  };
}

export interface SendingState {
  status: MessageStatus;
  providerRef: string | null;
  claimedAt: Date | null;
  enterpriseNumber: string;
}

export async function findSendingState(db: Db, id: number): Promise<SendingState | undefined> {
  const row = await db
    .selectFrom('user_sms_send')
    .select(['status', 'provider_ref', 'claimed_at', 'enterprise_number'])
    .where('id', '=', String(id))
    .executeTakeFirst();
  return row && { status: row.status, providerRef: row.provider_ref, claimedAt: row.claimed_at, enterpriseNumber: row.enterprise_number };
}

export interface Acceptance {
  websmsMessageId: number | null;
  price: number | null;
  parts: number | null;
  amount: number | null;
  response: unknown;
}

/**
 * sending → success. `sent_at`: when WebSMS accepted it, in the table's local-time convention. Its
 * delivery status is pending, first asked about `firstCheckAfterMs` from now. False when the row was
 * not `sending`. A message with a callback_url is left owing its message.sent event (callback_owed).
 */
export async function recordAccepted(db: Db, id: number, acceptance: Acceptance, firstCheckAfterMs?: number): Promise<boolean> {
  const row = await db
    .with('accepted', (qb) =>
      qb
        .updateTable('user_sms_send')
        .set({
          status: 'success',
          message_id: acceptance.websmsMessageId === null ? null : String(acceptance.websmsMessageId),
          price: acceptance.price,
          parts: acceptance.parts,
          amount: acceptance.amount,
          response_data: JSON.stringify(acceptance.response),
          error_message: null,
          error_code: null,
          sent_at: sql`LOCALTIMESTAMP`,
          updated_at: sql`now()`,
          delivery_status: 'pending',
        })
        .where('id', '=', String(id))
        .where('status', '=', 'sending')
        .returning('id'),
    )
    // From now on its delivery status is asked about (src/delivery/): at its first check when the
    // caller knows the schedule, else due at once, and the poller schedules it from its own settings.
    .with('scheduled', (qb) =>
      qb
        .insertInto('delivery_due')
        .columns(['message_id', 'due_at'])
        .expression((eb) => eb.selectFrom('accepted').select(['id', (firstCheckAfterMs === undefined ? sql`now()` : sql`now() + make_interval(secs => ${firstCheckAfterMs / 1000})`).as('due_at')]))
        .onConflict((oc) => oc.column('message_id').doUpdateSet({ due_at: (eb) => eb.ref('excluded.due_at') })),
    )
    // Columns named, not *: a statement with * is not kept prepared (database.ts).
    .selectFrom('accepted')
    .select('id')
    .executeTakeFirst();
  return row !== undefined;
}

export interface Failure {
  code: string;
  message: string;
  response?: unknown;
}

/** Any unfinished state → failed (final). */
export async function recordFailed(db: Db, id: number, failure: Failure): Promise<boolean> {
  return finish(db, id, 'failed', failure);
}

/**
 * pending → failed, for a message whose enqueue failed. Only `pending`: should the job have reached
 * Redis after all (an error after the write), a worker may already hold the row, and a message that
 * may have been sent must never be recorded as failed.
 */
export async function recordNeverQueued(db: Db, id: number, failure: Failure): Promise<boolean> {
  const result = await db
    .updateTable('user_sms_send')
    .set({ status: 'failed', error_message: failure.message, error_code: failure.code, updated_at: sql`now()` })
    .where('id', '=', String(id))
    .where('status', '=', 'pending')
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/** sending → unknown (final): WebSMS may have the message and we could not find out. */
export async function recordUnknown(db: Db, id: number, failure: Failure): Promise<boolean> {
  return finish(db, id, 'unknown', failure);
}

async function finish(db: Db, id: number, status: 'failed' | 'unknown', failure: Failure): Promise<boolean> {
  const result = await db
    .updateTable('user_sms_send')
    .set({
      status,
      error_message: failure.message,
      error_code: failure.code,
      ...(failure.response === undefined ? {} : { response_data: JSON.stringify(failure.response) }),
      updated_at: sql`now()`,
    })
    .where('id', '=', String(id))
    .where('status', 'in', UNFINISHED)
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

/**
 * sending → queued: not sent (refused connection, error 1/7, lookup said "not found").
 * `afterUnknown`: the previous call's outcome was unknown and only WebSMS's lookup says it was not
 * sent; the row keeps that on record, since a wrong lookup would make the resend a duplicate.
 */
export async function releaseForResend(db: Db, id: number, failure: Failure, afterUnknown = false): Promise<void> {
  await db
    .updateTable('user_sms_send')
    .set({
      status: 'queued',
      error_message: failure.message,
      error_code: failure.code,
      updated_at: sql`now()`,
      ...(afterUnknown ? { resent_after_unknown: true } : {}),
    })
    .where('id', '=', String(id))
    .where('status', '=', 'sending')
    .execute();
}

export interface UnfinishedMessage {
  id: number;
  enterpriseNumber: string;
  status: MessageStatus;
}

/** Unfinished rows untouched for a while: candidates whose queue job may have been lost. */
export async function findStaleUnfinished(db: Db, idleMs: number, limit: number): Promise<UnfinishedMessage[]> {
  const rows = await db
    .selectFrom('user_sms_send')
    .select(['id', 'enterprise_number', 'status'])
    .where('status', 'in', UNFINISHED)
    .where('updated_at', '<', sql<Date>`now() - make_interval(secs => ${idleMs / 1000})`)
    .orderBy('updated_at')
    .limit(limit)
    .execute();
  return rows.map((r) => ({ id: Number(r.id), enterpriseNumber: r.enterprise_number, status: r.status }));
}

/** Touch a row the sweeper re-enqueued so it is not picked again on the next pass. */
export async function touch(db: Db, id: number): Promise<void> {
  await db
    .updateTable('user_sms_send')
    .set({ updated_at: sql`now()` })
    .where('id', '=', String(id))
    .where('status', 'in', UNFINISHED)
    .execute();
}

// ── Operator actions (`npm run jobs`): retry inspection reads rows in bulk, retry/drop move them. ──

export interface QueuedMessageRow {
  id: number;
  enterpriseNumber: string;
  status: MessageStatus;
  error: string | null;
  errorCode: string | null;
  attempts: number;
  notBefore: Date | null;
}

/** The rows behind a page of queue jobs, in one statement. */
export async function findMessagesByIds(db: Db, ids: readonly number[]): Promise<Map<number, QueuedMessageRow>> {
  if (ids.length === 0) return new Map();
  const rows = await db
    .selectFrom('user_sms_send')
    .select(['id', 'enterprise_number', 'status', 'error_message', 'error_code', 'attempts', 'not_before'])
    .where('id', 'in', ids.map(String))
    .execute();
  return new Map(
    rows.map((r) => [
      Number(r.id),
      { id: Number(r.id), enterpriseNumber: r.enterprise_number, status: r.status, error: r.error_message, errorCode: r.error_code, attempts: r.attempts, notBefore: r.not_before },
    ]),
  );
}

/** One entry of `operator_actions` (see its migration). */
export interface OperatorActionEntry {
  action: 'retry' | 'drop' | 'cancel';
  /** ISO-8601 */
  at: string;
  /** who ran it: OS user@host */
  by: string;
  from: MessageStatus;
  to: MessageStatus;
  /** the queue job's state before the action, and what was done to it */
  job: string;
  reason: string | null;
}

export interface OperatorChange {
  from: MessageStatus;
  to: MessageStatus;
  entry: OperatorActionEntry;
  /** replaces error_message / error_code (a drop says who dropped it and why) */
  failure?: Failure;
  /** Only when no WebSMS call can still be in flight: claimed longer ago than this (a drop of a `sending` row). */
  quietForMs?: number;
}

/**
 * An operator's retry or drop: `from` → `to` only if the row is still `from` (a worker may have
 * moved it since it was read), with the action appended to `operator_actions`. A row reopened from
 * `failed` loses its rate-limit wait; one reopened from `unknown` keeps `claimed_at`, so the
 * reconcile path may look it up at once. Returns false when the row was not in `from` any more.
 */
export async function recordOperatorAction(db: Db, id: number, change: OperatorChange): Promise<boolean> {
  const { from, to, entry, failure, quietForMs } = change;
  const result = await sql`
    UPDATE user_sms_send SET
      status = ${to},
      operator_actions = operator_actions || ${JSON.stringify([entry])}::jsonb,
      not_before = ${from === 'failed' ? null : sql`not_before`},
      error_message = ${failure ? failure.message : sql`error_message`},
      error_code = ${failure ? failure.code : sql`error_code`},
      updated_at = now()
    WHERE id = ${String(id)}
      AND status = ${from}
      ${quietForMs === undefined ? sql`` : sql`AND (claimed_at IS NULL OR claimed_at < now() - make_interval(secs => ${quietForMs / 1000}))`}`.execute(db);
  return (result.numAffectedRows ?? 0n) > 0n;
}

/** The actions recorded on a message, oldest first. */
export async function findOperatorActions(db: Db, id: number): Promise<OperatorActionEntry[]> {
  const result = await sql<{ operator_actions: OperatorActionEntry[] }>`SELECT operator_actions FROM user_sms_send WHERE id = ${String(id)}`.execute(db);
  return result.rows[0]?.operator_actions ?? [];
}

// ── Idempotency-Key and the daily cap (admission.ts) ──

/** Refusals decided before sending: they never count towards an enterprise's daily cap. */
export const REFUSED_BEFORE_SENDING = ['enterprise_not_found', 'enterprise_not_allowed', 'daily_cap', 'queue_unavailable'];

// `created_at` is server-local wall time (see localInstant); compared as an instant so that a DST
// change cannot stretch or shrink the retention window.
const createdBefore = (retentionS: number) =>
  sql<boolean>`(created_at AT TIME ZONE current_setting('TimeZone')) < now() - make_interval(secs => ${retentionS})`;

/**
 * A key may be taken over by a new message when its holder is past the retention window, or was
 * certainly never sent (the enqueue failed and the caller was told to retry).
 */
const keyReusable = (retentionS: number) =>
  sql<boolean>`(coalesce(${createdBefore(retentionS)}, false) OR (status = 'failed' AND error_code = 'queue_unavailable'))`;

export interface KeyHolder {
  id: number;
  requestHash: string | null;
  /** past the retention window, or never sent: the key may be given to a new message */
  reusable: boolean;
}

export async function findKeyHolder(db: Db, enterpriseNumber: string, key: string, retentionS: number): Promise<KeyHolder | undefined> {
  const row = await db
    .selectFrom('user_sms_send')
    .select(['id', 'request_hash', keyReusable(retentionS).as('reusable')])
    .where('enterprise_number', '=', enterpriseNumber)
    .where('idempotency_key', '=', key)
    .executeTakeFirst();
  return row && { id: Number(row.id), requestHash: row.request_hash, reusable: row.reusable };
}

/**
 * Takes the key off a reusable holder so the unique index lets a new message have it. The condition
 * is checked again here: of two requests racing for an expired key, only one clears it, and both then
 * meet in the insert's ON CONFLICT. The holder keeps its request_hash; the key itself is gone.
 */
export async function releaseReusableKey(db: Db, id: number, key: string, retentionS: number): Promise<boolean> {
  const result = await db
    .updateTable('user_sms_send')
    .set({ idempotency_key: null })
    .where('id', '=', String(id))
    .where('idempotency_key', '=', key)
    .where(keyReusable(retentionS))
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
}

export type PendingInsert =
  | { kind: 'inserted'; id: number }
  /** another message holds the Idempotency-Key */
  | { kind: 'key-taken' }
  /** PostgreSQL received the statement after the deadline: nothing was stored */
  | { kind: 'late' };

/**
 * The insert of a message being admitted: its provider_ref, chosen before it is sent so that the row
 * can be found should the answer be lost (findIdByProviderRef), and when it last went out.
 */
export interface PendingWrite {
  providerRef: string;
  /** performance.now() when the insert was sent (set by insertPendingMessageBy) */
  sentAtMs?: number;
}

/**
 * The row of a message that will be sent (insertPendingMessage), stored only if PostgreSQL receives
 * the statement within `arrival.ms` of its sending, by PostgreSQL's own clock, and, under an
 * Idempotency-Key, only if no other message holds the key (the unique index decides; ON CONFLICT DO
 * NOTHING). The select list after the CTE tells "late" from "key taken" in the same round trip.
 */
export async function insertPendingMessageBy(
  db: Db,
  message: NewMessage,
  arrival: { clock: ServerClock; ms: number },
  write: PendingWrite,
  idempotency?: { key: string; requestHash: string },
): Promise<PendingInsert> {
  // The deadline is taken once the statement has its connection, so a wait for the pool's next free
  // connection (a busy moment) does not eat into it.
  if (db.isTransaction) return insertPendingRow(db, message, arrival.clock.after(arrival.ms), write, idempotency);
  return db.connection().execute((connection) => insertPendingRow(connection, message, arrival.clock.after(arrival.ms), write, idempotency));
}

async function insertPendingRow(db: Db, message: NewMessage, deadline: Date, write: PendingWrite, idempotency?: { key: string; requestHash: string }): Promise<PendingInsert> {
  const values = {
    ...newMessageValues(message),
    status: 'pending',
    provider_ref: write.providerRef,
    idempotency_key: idempotency?.key ?? null,
    request_hash: idempotency?.requestHash ?? null,
  };
  const columns = Object.keys(values) as Array<keyof typeof values>;
  const insert = db
    .insertInto('user_sms_send')
    .columns(columns)
    .expression(db.selectNoFrom((eb) => columns.map((column) => eb.val(values[column]).as(column))).where(sql<boolean>`clock_timestamp() < ${deadline}`))
    .onConflict((oc) => oc.columns(['enterprise_number', 'idempotency_key']).where('idempotency_key', 'is not', null).doNothing())
    .returning('id');
  const statement = db
    .with('inserted', () => insert)
    .selectNoFrom((eb) => [eb.selectFrom('inserted').select('id').as('id'), sql<boolean>`clock_timestamp() < ${deadline}`.as('in_time')]);
  write.sentAtMs = performance.now();
  const result = await statement.executeTakeFirstOrThrow();
  delete write.sentAtMs; // answered
  if (result.id !== null) return { kind: 'inserted', id: Number(result.id) };
  return result.in_time ? { kind: 'key-taken' } : { kind: 'late' };
}

/** The message stored under `providerRef`, if any (the unique idx_user_sms_provider_ref). */
export async function findIdByProviderRef(db: Db, providerRef: string): Promise<number | undefined> {
  const row = await db.selectFrom('user_sms_send').select('id').where('provider_ref', '=', providerRef).executeTakeFirst();
  return row && Number(row.id);
}

export interface EnterpriseDay {
  /** messages accepted today (server-local day), counted up to `upTo` */
  accepted: number;
  /** seconds until the next day starts (server-local midnight) */
  secondsLeft: number;
}

/**
 * Messages accepted today for an enterprise: every row except refusals. The LIMIT bounds the work at
 * the cap whatever the day's volume; idx_user_sms_enterprise_created makes it a range scan.
 */
export async function countAcceptedToday(db: Db, enterpriseNumber: string, upTo: number): Promise<EnterpriseDay> {
  const result = await sql<{ accepted: string; seconds_left: string }>`
    SELECT
      (SELECT count(*) FROM (
         SELECT 1 FROM user_sms_send
          WHERE enterprise_number = ${enterpriseNumber}
            AND created_at >= CURRENT_DATE
            AND (error_code IS NULL OR error_code <> ALL(${REFUSED_BEFORE_SENDING}))
          LIMIT ${upTo}) AS today) AS accepted,
      ceil(extract(epoch FROM (CURRENT_DATE + 1) - LOCALTIMESTAMP)) AS seconds_left`.execute(db);
  const row = result.rows[0]!;
  return { accepted: Number(row.accepted), secondsLeft: Math.max(1, Number(row.seconds_left)) };
}
