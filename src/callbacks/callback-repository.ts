import { sql } from 'kysely';
import type { Db } from '../db/database.ts';

// All SQL on callback_events, and the one read of a message an event needs. One function per
// statement, the database first. Raw SQL: the table belongs to this room alone.
//
// Glossary
// - event: one change of a message that its caller asked to hear about (message.sent …): a row here,
//   which is also its place in the delivery queue; its body is fixed when it is raised and sent byte
//   for byte each time.
// - attempt: one POST of an event to its callback_url; every attempt carries the event's webhook-id.
// - head: a message's oldest pending event; only the head is claimed for an attempt, so one message's
//   events arrive in order.
// - lease: a claimed event is due again after its lease unless its attempt is recorded first.
// - given up: an event whose retry window ended without a 2xx; an operator may retry it.

export type CallbackEventStatus = 'pending' | 'delivered' | 'given_up';

/** What an event carries about its message: never the phone, the text or a key. */
export interface MessageSnapshot {
  id: number;
  enterpriseNumber: string;
  status: string;
  deliveryStatus: string | null;
  websmsMessageId: number | null;
  customId: string | null;
  price: number | null;
  parts: number | null;
  amount: number | null;
  error: string | null;
  sentAt: Date | null;
  deliveredAt: Date | null;
  callbackUrl: string;
  /** send attempts + operator actions: tells a repeat of the same outcome from a later change */
  revision: number;
}

const toNumber = (value: string | number | null): number | null => (value === null ? null : Number(value));

/** The columns of user_sms_send a MessageSnapshot is made of (also a change's RETURNING: delivery-repository.ts). */
export interface SnapshotRow {
  id: string;
  enterprise_number: string;
  status: string;
  delivery_status: string | null;
  message_id: string | null;
  custom_id: string | null;
  price: string | null;
  parts: number | null;
  amount: string | null;
  error_message: string | null;
  /** as an instant (sent_at is server-local wall time) */
  sent_at: Date | null;
  delivered_at: Date | null;
  callback_url: string | null;
  /** attempts + operator actions */
  revision: number;
}

/** The snapshot an event describes; null when the message has no callback_url. */
export function snapshotOf(row: SnapshotRow): MessageSnapshot | null {
  if (row.callback_url === null) return null;
  return {
    id: Number(row.id),
    enterpriseNumber: row.enterprise_number,
    status: row.status,
    deliveryStatus: row.delivery_status,
    websmsMessageId: toNumber(row.message_id),
    customId: row.custom_id,
    price: toNumber(row.price),
    parts: row.parts,
    amount: toNumber(row.amount),
    error: row.error_message,
    sentAt: row.sent_at,
    deliveredAt: row.delivered_at,
    callbackUrl: row.callback_url,
    revision: row.revision,
  };
}

/** A SnapshotRow's columns: each name, and the expression over user_sms_send `m` where it is not the column itself. */
const SNAPSHOT_FIELDS: readonly (readonly [name: string, expression?: string])[] = [
  ['id'], ['enterprise_number'], ['status'], ['message_id'], ['custom_id'], ['price'], ['parts'], ['amount'], ['error_message'],
  ['sent_at', "m.sent_at AT TIME ZONE current_setting('TimeZone')"],
  ['delivery_status'], ['delivered_at'], ['callback_url'],
  ['revision', '(m.attempts + jsonb_array_length(m.operator_actions))::int'],
];
/** The snapshot selected from user_sms_send `m`. */
const SNAPSHOT_COLUMNS = sql.raw(SNAPSHOT_FIELDS.map(([name, expression]) => (expression ? `${expression} AS ${name}` : `m.${name}`)).join(', '));
/** The same columns of a subquery `m` that selected SNAPSHOT_COLUMNS. */
const SNAPSHOT_NAMES = sql.raw(SNAPSHOT_FIELDS.map(([name]) => `m.${name}`).join(', '));

/**
 * The message as an event describes it, when it has a callback_url.
 */
export async function findMessageSnapshot(db: Db, messageId: number): Promise<MessageSnapshot | undefined> {
  const result = await sql<SnapshotRow>`
    SELECT ${SNAPSHOT_COLUMNS}
    FROM user_sms_send m
    WHERE m.id = ${String(messageId)} AND m.callback_url IS NOT NULL`.execute(db);
  const row = result.rows[0];
  return row ? (snapshotOf(row) ?? undefined) : undefined;
}

export interface NewCallbackEvent {
  messageId: number;
  type: string;
  revision: number;
  webhookId: string;
  url: string;
  body: string;
  createdAt: Date;
}

/** A raiser that delivers events itself asks for the ones it may attempt at once to be leased to it. */
export interface RaiseOptions {
  /** Lease the new event to the raiser for this long if it is its message's head (no earlier event pending). */
  claimForMs?: number | undefined;
}

/**
 * The new event's id, and whether it was leased to the raiser (RaiseOptions); undefined when this change
 * of this message was already raised. Either way the change is no longer owed: the same statement
 * settles its callback_owed marker. An event not leased is due at once and claimed by a dispatcher
 * (claimDueHeads) when it is its message's head.
 *
 * The head look locks the message's pending events (FOR UPDATE): an attempt being recorded (delivered
 * or given up) is waited for, and then seen as it is now, so an event raised right after its
 * predecessor finished is its head, and one raised while the predecessor is pending is not leased.
 */
export async function insertEvent(db: Db, event: NewCallbackEvent, options: RaiseOptions = {}): Promise<{ id: number; claimed: boolean } | undefined> {
  const claimS = options.claimForMs === undefined ? null : options.claimForMs / 1000;
  const result = await sql<{ id: string; claimed: boolean }>`
    WITH earlier AS (
      SELECT id FROM callback_events WHERE message_id = ${String(event.messageId)} AND status = 'pending' FOR UPDATE
    ), settled AS (
      DELETE FROM callback_owed WHERE message_id = ${String(event.messageId)} AND type = ${event.type} AND revision = ${event.revision}
    )
    INSERT INTO callback_events (message_id, type, revision, webhook_id, url, body, created_at, window_start_at, next_attempt_at)
    SELECT ${String(event.messageId)}, ${event.type}, ${event.revision}, ${event.webhookId}, ${event.url}, ${event.body},
           ${event.createdAt}, ${event.createdAt},
           CASE WHEN ${claimS}::float8 IS NOT NULL AND NOT EXISTS (SELECT 1 FROM earlier)
                THEN now() + make_interval(secs => ${claimS}::float8) ELSE ${event.createdAt}::timestamptz END
    ON CONFLICT (message_id, type, revision) DO NOTHING
    RETURNING id, next_attempt_at > created_at AS claimed`.execute(db);
  const row = result.rows[0];
  return row ? { id: Number(row.id), claimed: row.claimed } : undefined;
}

/**
 * insertEvent for several messages in one statement, at most one event per message (a batch of owed
 * changes). The first ones may be leased to the raiser: `claims` of them for `claimForMs`, or as many
 * as `claimsForMs` names, each for its own lease. Changes already raised are left out.
 */
export async function insertEvents(
  db: Db,
  events: readonly NewCallbackEvent[],
  options: RaiseOptions & { claims?: number; claimsForMs?: readonly number[] } = {},
): Promise<Array<{ id: number; messageId: number; claimed: boolean }>> {
  if (events.length === 0) return [];
  if (new Set(events.map((e) => e.messageId)).size !== events.length) throw new Error('insertEvents takes at most one event per message');
  const { claimForMs } = options;
  const leasesMs = options.claimsForMs ?? (claimForMs === undefined ? [] : Array<number>(options.claims ?? events.length).fill(claimForMs));
  const claimS = new Map(events.slice(0, leasesMs.length).map((e, i) => [e.messageId, leasesMs[i]! / 1000]));
  // Locks in message order: two statements over the same messages never wait on each other crosswise.
  const sorted = [...events].sort((a, b) => a.messageId - b.messageId);
  const column = <T>(pick: (e: NewCallbackEvent) => T) => sorted.map(pick);
  // Columns named, never *: a statement with * is not kept prepared (database.ts).
  const result = await sql<{ id: string; message_id: string; claimed: boolean }>`
    WITH input AS (
      SELECT message_id, type, revision, webhook_id, url, body, created_at, claim_s, position
      FROM unnest(${column((e) => String(e.messageId))}::bigint[], ${column((e) => e.type)}::text[], ${column((e) => e.revision)}::int[],
                           ${column((e) => e.webhookId)}::text[], ${column((e) => e.url)}::text[], ${column((e) => e.body)}::text[],
                           ${column((e) => e.createdAt.toISOString())}::timestamptz[], ${column((e) => claimS.get(e.messageId) ?? null)}::float8[])
        WITH ORDINALITY AS i (message_id, type, revision, webhook_id, url, body, created_at, claim_s, position)
    ), earlier AS (
      SELECT e.message_id FROM callback_events e JOIN input i ON e.message_id = i.message_id
      WHERE e.status = 'pending' ORDER BY e.message_id, e.id FOR UPDATE OF e
    ), settled AS (
      DELETE FROM callback_owed o USING input i WHERE o.message_id = i.message_id AND o.type = i.type AND o.revision = i.revision
    )
    INSERT INTO callback_events (message_id, type, revision, webhook_id, url, body, created_at, window_start_at, next_attempt_at)
    SELECT message_id, type, revision, webhook_id, url, body, created_at, created_at,
           CASE WHEN claim_s IS NOT NULL AND NOT EXISTS (SELECT 1 FROM earlier WHERE earlier.message_id = input.message_id)
                THEN now() + make_interval(secs => claim_s) ELSE created_at END
    FROM input ORDER BY position
    ON CONFLICT (message_id, type, revision) DO NOTHING
    RETURNING id, message_id, next_attempt_at > created_at AS claimed`.execute(db);
  return result.rows.map((row) => ({ id: Number(row.id), messageId: Number(row.message_id), claimed: row.claimed })).sort((a, b) => a.id - b.id);
}

/** Whether no earlier event of the message is still pending (an operator's retry says when it goes out). */
export async function isHead(db: Db, messageId: number, eventId: number): Promise<boolean> {
  const result = await sql<{ earlier: boolean }>`
    SELECT EXISTS (
      SELECT 1 FROM callback_events
      WHERE message_id = ${String(messageId)} AND status = 'pending' AND id < ${String(eventId)}
    ) AS earlier`.execute(db);
  return result.rows[0]?.earlier === false;
}

export interface CallbackEvent {
  id: number;
  messageId: number;
  type: string;
  webhookId: string;
  url: string;
  body: string;
  status: CallbackEventStatus;
  attempts: number;
  createdAt: Date;
  windowStartAt: Date;
  nextAttemptAt: Date;
  lastAttemptAt: Date | null;
  lastError: string | null;
  lastHttpStatus: number | null;
  finishedAt: Date | null;
}

interface EventRow {
  id: string;
  message_id: string;
  type: string;
  webhook_id: string;
  url: string;
  body: string;
  status: CallbackEventStatus;
  attempts: number;
  created_at: Date;
  window_start_at: Date;
  next_attempt_at: Date;
  last_attempt_at: Date | null;
  last_error: string | null;
  last_http_status: number | null;
  finished_at: Date | null;
}

function toEvent(row: EventRow): CallbackEvent {
  return {
    id: Number(row.id),
    messageId: Number(row.message_id),
    type: row.type,
    webhookId: row.webhook_id,
    url: row.url,
    body: row.body,
    status: row.status,
    attempts: row.attempts,
    createdAt: row.created_at,
    windowStartAt: row.window_start_at,
    nextAttemptAt: row.next_attempt_at,
    lastAttemptAt: row.last_attempt_at,
    lastError: row.last_error,
    lastHttpStatus: row.last_http_status,
    finishedAt: row.finished_at,
  };
}

const EVENT_COLUMNS_LIST = ['id', 'message_id', 'type', 'webhook_id', 'url', 'body', 'status', 'attempts', 'created_at', 'window_start_at',
  'next_attempt_at', 'last_attempt_at', 'last_error', 'last_http_status', 'finished_at'] as const;
const EVENT_COLUMNS = sql.raw(EVENT_COLUMNS_LIST.join(', '));

export async function findEvent(db: Db, eventId: number): Promise<CallbackEvent | undefined> {
  const result = await sql<EventRow>`SELECT ${EVENT_COLUMNS} FROM callback_events WHERE id = ${String(eventId)}`.execute(db);
  const row = result.rows[0];
  return row ? toEvent(row) : undefined;
}

/**
 * Claims up to `limit` due events that are their message's head (no earlier event of it still
 * pending), leasing each for `leaseMs`: it is due again then, unless its attempt is recorded first (a
 * process that dies mid-attempt leaves its events to be attempted again, with the same webhook-id).
 * SKIP LOCKED: any number of processes claim side by side, never the same event. An event whose
 * earlier sibling is out on lease stays unclaimed, so one message's events go out one at a time, in
 * order.
 */
export async function claimDueHeads(db: Db, options: { limit: number; leaseMs: number }): Promise<CallbackEvent[]> {
  const result = await sql<EventRow>`
    WITH due AS (
      SELECT e.id FROM callback_events e
      WHERE e.status = 'pending' AND e.next_attempt_at <= now()
        AND NOT EXISTS (SELECT 1 FROM callback_events p WHERE p.message_id = e.message_id AND p.status = 'pending' AND p.id < e.id)
      ORDER BY e.next_attempt_at
      LIMIT ${options.limit}
      FOR UPDATE SKIP LOCKED
    )
    UPDATE callback_events e SET next_attempt_at = now() + make_interval(secs => ${options.leaseMs / 1000})
    FROM due WHERE e.id = due.id
    RETURNING ${sql.raw(EVENT_COLUMNS_LIST.map((column) => `e.${column}`).join(', '))}`.execute(db);
  return result.rows.map(toEvent).sort((a, b) => a.id - b.id);
}

export type AttemptOutcome = 'delivered' | 'retry' | 'given_up';

/** One attempt of a claimed event, as recordAttempts writes it. */
export interface AttemptRecord {
  eventId: number;
  outcome: AttemptOutcome;
  httpStatus: number | null;
  error: string | null;
  /** when outcome is 'retry' */
  nextAttemptAt: Date | null;
}

/**
 * Records a batch of attempts in one statement: delivered and given up finish their events (the next
 * event of each message becomes its head), a retry stays pending until nextAttemptAt. Events no longer
 * pending (recorded meanwhile by a process that claimed them again after a lease ran out) are left as
 * they are. Returns the ids recorded.
 */
export async function recordAttempts(db: Db, attempts: readonly AttemptRecord[]): Promise<number[]> {
  if (attempts.length === 0) return [];
  // Row locks in id order: two statements over the same rows never wait on each other crosswise.
  const sorted = [...attempts].sort((a, b) => a.eventId - b.eventId);
  const column = <T>(pick: (a: AttemptRecord) => T) => sorted.map(pick);
  const result = await sql<{ id: string }>`
    UPDATE callback_events e SET
      status = CASE r.outcome WHEN 'retry' THEN 'pending' ELSE r.outcome END,
      attempts = e.attempts + 1,
      last_attempt_at = now(),
      finished_at = CASE r.outcome WHEN 'retry' THEN NULL ELSE now() END,
      next_attempt_at = coalesce(r.next_attempt_at, e.next_attempt_at),
      last_http_status = r.http_status,
      last_error = r.error
    FROM unnest(${column((a) => String(a.eventId))}::bigint[], ${column((a) => a.outcome)}::text[], ${column((a) => a.httpStatus)}::smallint[],
                ${column((a) => a.error)}::text[], ${column((a) => a.nextAttemptAt?.toISOString() ?? null)}::timestamptz[])
      AS r (id, outcome, http_status, error, next_attempt_at)
    WHERE e.id = r.id AND e.status = 'pending'
    RETURNING e.id`.execute(db);
  return result.rows.map((row) => Number(row.id));
}

/**
 * Gives back the leases of events this process holds and will not attempt (it is stopping, or they
 * waited too long for an attempt slot): they are due now, for any process to claim.
 */
export async function releaseLeases(db: Db, eventIds: readonly number[]): Promise<void> {
  if (eventIds.length === 0) return;
  await sql`
    UPDATE callback_events SET next_attempt_at = now()
    WHERE id = ANY(${eventIds.map(String)}::bigint[]) AND status = 'pending' AND next_attempt_at > now()`.execute(db);
}

/** given_up → pending with a fresh retry window, due now (an operator's retry). */
export async function reopenGivenUp(db: Db, eventId: number): Promise<boolean> {
  const result = await sql`
    UPDATE callback_events SET status = 'pending', window_start_at = now(), next_attempt_at = now(), finished_at = NULL
    WHERE id = ${String(eventId)} AND status = 'given_up'`.execute(db);
  return (result.numAffectedRows ?? 0n) > 0n;
}

export interface EventFilter {
  statuses: readonly CallbackEventStatus[];
  messageId?: number | undefined;
  limit: number;
}

/** Newest first. */
export async function listEvents(db: Db, filter: EventFilter): Promise<CallbackEvent[]> {
  const result = await sql<EventRow>`
    SELECT ${EVENT_COLUMNS} FROM callback_events
    WHERE status = ANY(${[...filter.statuses]}::text[])
      ${filter.messageId === undefined ? sql`` : sql`AND message_id = ${String(filter.messageId)}`}
    ORDER BY id DESC
    LIMIT ${filter.limit}`.execute(db);
  return result.rows.map(toEvent);
}

/** Events pending and given up right now (the /metrics gauge). */
export async function countOpenEvents(db: Db): Promise<{ pending: number; givenUp: number }> {
  const result = await sql<{ pending: string; given_up: string }>`
    SELECT count(*) FILTER (WHERE status = 'pending') AS pending, count(*) FILTER (WHERE status = 'given_up') AS given_up
    FROM callback_events WHERE status IN ('pending', 'given_up')`.execute(db);
  const row = result.rows[0];
  return { pending: Number(row?.pending ?? 0), givenUp: Number(row?.given_up ?? 0) };
}

/** A change of a message whose event was not raised yet (migration 2026-12-02T04-00_callback-owed). */
export interface OwedEvent {
  messageId: number;
  type: string;
  revision: number;
}

/** An owed change, and its message as an event would describe it now (undefined: the message has no callback_url). */
export interface OwedChange extends OwedEvent {
  message: MessageSnapshot | undefined;
}

/**
 * Up to `limit` markers, oldest first, each with its message read in the same statement (one statement
 * for a batch, however many messages it names), by its key whatever the planner's estimates
 * (delivery-repository.ts claimDueChecks says why).
 */
export async function findOwed(db: Db, limit: number): Promise<OwedChange[]> {
  const result = await sql<{ owed_message_id: string; owed_type: string; owed_revision: number } & Partial<SnapshotRow>>`
    SELECT o.message_id AS owed_message_id, o.type AS owed_type, o.revision AS owed_revision, ${SNAPSHOT_NAMES}
    FROM callback_owed o LEFT JOIN LATERAL (SELECT ${SNAPSHOT_COLUMNS} FROM user_sms_send m WHERE m.id = o.message_id LIMIT 1) m ON true
    ORDER BY o.created_at, o.message_id
    LIMIT ${limit}`.execute(db);
  return result.rows.map((row) => ({
    messageId: Number(row.owed_message_id),
    type: row.owed_type,
    revision: row.owed_revision,
    message: row.id === undefined || row.id === null ? undefined : (snapshotOf(row as SnapshotRow) ?? undefined),
  }));
}

/** Forgets markers whose message has moved on (each later change left a marker of its own). */
export async function forgetOwed(db: Db, owed: readonly OwedEvent[]): Promise<void> {
  if (owed.length === 0) return;
  await sql`
    DELETE FROM callback_owed o
    USING unnest(${owed.map((e) => String(e.messageId))}::bigint[], ${owed.map((e) => e.type)}::text[], ${owed.map((e) => e.revision)}::int[]) AS f (message_id, type, revision)
    WHERE o.message_id = f.message_id AND o.type = f.type AND o.revision = f.revision`.execute(db);
}
