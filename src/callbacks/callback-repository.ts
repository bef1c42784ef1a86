import { sql } from 'kysely';
import type { Db } from '../db/database.ts';

// All SQL on callback_events, and the one read of a message an event needs. One function per
// statement, the database first. Raw SQL: the table belongs to this room alone.
//
// Glossary
// - event: one change of a message that its caller asked to hear about (message.sent …), a row here
//   before it is a queue job; its body is fixed when it is raised and sent byte for byte each time.
// - attempt: one POST of an event to its callback_url; every attempt carries the event's webhook-id.
// - head: a message's oldest pending event; only the head is delivered, so one message's events
//   arrive in order.
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

/**
 * The message as an event describes it, when it has a callback_url. delivery_status and delivered_at
 * are read through to_jsonb so that this works with or without the delivery-status columns
 * (src/delivery/), and whatever their timestamp type.
 */
export async function findMessageSnapshot(db: Db, messageId: number): Promise<MessageSnapshot | undefined> {
  const result = await sql<SnapshotRow>`
    SELECT m.id, m.enterprise_number, m.status, m.message_id, m.custom_id, m.price, m.parts, m.amount, m.error_message,
           m.sent_at AT TIME ZONE current_setting('TimeZone') AS sent_at,
           to_jsonb(m) ->> 'delivery_status' AS delivery_status,
           (to_jsonb(m) ->> 'delivered_at')::timestamptz AS delivered_at,
           m.callback_url,
           (m.attempts + jsonb_array_length(m.operator_actions))::int AS revision
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

/**
 * The new event's id, and whether it is its message's head (no earlier event still pending); undefined
 * when this change of this message was already raised. Either way the change is no longer owed: the
 * same statement settles its callback_owed marker.
 *
 * Why one statement can both write and look (see isHead for the two-statement form the finishing side
 * keeps): the look locks the message's pending events (FOR UPDATE). A worker finishing one of them
 * (delivered or given up) updates that row, then reads the message's next pending event in a new
 * statement. If the finisher's update comes first, this statement waits for its commit and then sees
 * the row as it is now (no longer pending): the new event is the head and is queued here. If this
 * statement locks first, the finisher's update waits for this commit, so its read afterwards sees the
 * new event and queues it. Either way one of the two queues it (both may: the job id is the event's).
 */
export async function insertEvent(db: Db, event: NewCallbackEvent): Promise<{ id: number; head: boolean } | undefined> {
  const result = await sql<{ id: string; head: boolean }>`
    WITH earlier AS (
      SELECT id FROM callback_events WHERE message_id = ${String(event.messageId)} AND status = 'pending' FOR UPDATE
    ), settled AS (
      DELETE FROM callback_owed WHERE message_id = ${String(event.messageId)} AND type = ${event.type} AND revision = ${event.revision}
    ), inserted AS (
      INSERT INTO callback_events (message_id, type, revision, webhook_id, url, body, created_at, window_start_at, next_attempt_at)
      VALUES (${String(event.messageId)}, ${event.type}, ${event.revision}, ${event.webhookId}, ${event.url}, ${event.body},
              ${event.createdAt}, ${event.createdAt}, ${event.createdAt})
      ON CONFLICT (message_id, type, revision) DO NOTHING
      RETURNING id
    )
    SELECT inserted.id, NOT EXISTS (SELECT 1 FROM earlier) AS head FROM inserted`.execute(db);
  const row = result.rows[0];
  return row ? { id: Number(row.id), head: row.head } : undefined;
}

/**
 * insertEvent for several messages in one statement, at most one event per message (a delivery poll
 * round's final statuses): each new event's id and whether it is its message's head, by the same
 * locking look as insertEvent. Changes already raised are left out.
 */
export async function insertEvents(db: Db, events: readonly NewCallbackEvent[]): Promise<Array<{ id: number; messageId: number; head: boolean }>> {
  if (events.length === 0) return [];
  if (new Set(events.map((e) => e.messageId)).size !== events.length) throw new Error('insertEvents takes at most one event per message');
  // Locks in message order: two statements over the same messages never wait on each other crosswise.
  const sorted = [...events].sort((a, b) => a.messageId - b.messageId);
  const column = <T>(pick: (e: NewCallbackEvent) => T) => sorted.map(pick);
  const result = await sql<{ id: string; message_id: string; head: boolean }>`
    WITH input AS (
      SELECT * FROM unnest(${column((e) => String(e.messageId))}::bigint[], ${column((e) => e.type)}::text[], ${column((e) => e.revision)}::int[],
                           ${column((e) => e.webhookId)}::text[], ${column((e) => e.url)}::text[], ${column((e) => e.body)}::text[],
                           ${column((e) => e.createdAt.toISOString())}::timestamptz[])
        WITH ORDINALITY AS i (message_id, type, revision, webhook_id, url, body, created_at, position)
    ), earlier AS (
      SELECT e.message_id FROM callback_events e JOIN input i ON e.message_id = i.message_id
      WHERE e.status = 'pending' ORDER BY e.message_id, e.id FOR UPDATE OF e
    ), settled AS (
      DELETE FROM callback_owed o USING input i WHERE o.message_id = i.message_id AND o.type = i.type AND o.revision = i.revision
    ), inserted AS (
      INSERT INTO callback_events (message_id, type, revision, webhook_id, url, body, created_at, window_start_at, next_attempt_at)
      SELECT message_id, type, revision, webhook_id, url, body, created_at, created_at, created_at FROM input ORDER BY position
      ON CONFLICT (message_id, type, revision) DO NOTHING
      RETURNING id, message_id
    )
    SELECT inserted.id, inserted.message_id, NOT EXISTS (SELECT 1 FROM earlier WHERE earlier.message_id = inserted.message_id) AS head
    FROM inserted ORDER BY inserted.id`.execute(db);
  return result.rows.map((row) => ({ id: Number(row.id), messageId: Number(row.message_id), head: row.head }));
}

/**
 * Whether no earlier event of the message is still pending. A separate statement from the write before
 * it, on purpose: whoever finishes an event writes, then looks for the next (findHead) once the write is
 * committed; whoever raises one writes and looks in one statement that locks the events it looks at
 * (insertEvent). At least one of them sees the other's write and queues the event.
 */
export async function isHead(db: Db, messageId: number, eventId: number): Promise<boolean> {
  const result = await sql<{ earlier: boolean }>`
    SELECT EXISTS (
      SELECT 1 FROM callback_events
      WHERE message_id = ${String(messageId)} AND status = 'pending' AND id < ${String(eventId)}
    ) AS earlier`.execute(db);
  return result.rows[0]?.earlier === false;
}

/** The message's oldest pending event, if any. */
export async function findHead(db: Db, messageId: number): Promise<number | undefined> {
  const result = await sql<{ id: string }>`
    SELECT id FROM callback_events
    WHERE message_id = ${String(messageId)} AND status = 'pending'
    ORDER BY id LIMIT 1`.execute(db);
  const row = result.rows[0];
  return row ? Number(row.id) : undefined;
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

const EVENT_COLUMNS = sql`id, message_id, type, webhook_id, url, body, status, attempts, created_at, window_start_at,
  next_attempt_at, last_attempt_at, last_error, last_http_status, finished_at`;

export async function findEvent(db: Db, eventId: number): Promise<CallbackEvent | undefined> {
  const result = await sql<EventRow>`SELECT ${EVENT_COLUMNS} FROM callback_events WHERE id = ${String(eventId)}`.execute(db);
  const row = result.rows[0];
  return row ? toEvent(row) : undefined;
}

/** The event, and whether it is its message's head (as isHead, read in the same statement). */
export async function findEventWithTurn(db: Db, eventId: number): Promise<(CallbackEvent & { head: boolean }) | undefined> {
  const result = await sql<EventRow & { head: boolean }>`
    SELECT ${EVENT_COLUMNS},
      NOT EXISTS (
        SELECT 1 FROM callback_events p WHERE p.message_id = e.message_id AND p.status = 'pending' AND p.id < e.id
      ) AS head
    FROM callback_events e WHERE e.id = ${String(eventId)}`.execute(db);
  const row = result.rows[0];
  return row ? { ...toEvent(row), head: row.head } : undefined;
}

export interface AttemptRecord {
  httpStatus: number | null;
  error: string | null;
}

/** pending → delivered. False when the event was not pending any more. */
export async function recordDelivered(db: Db, eventId: number, attempt: AttemptRecord): Promise<boolean> {
  const result = await sql`
    UPDATE callback_events SET
      status = 'delivered', attempts = attempts + 1, last_attempt_at = now(), finished_at = now(),
      last_http_status = ${attempt.httpStatus}, last_error = ${attempt.error}
    WHERE id = ${String(eventId)} AND status = 'pending'`.execute(db);
  return (result.numAffectedRows ?? 0n) > 0n;
}

/** A failed attempt of a pending event; it stays pending until nextAttemptAt. */
export async function recordFailedAttempt(db: Db, eventId: number, attempt: AttemptRecord & { nextAttemptAt: Date }): Promise<boolean> {
  const result = await sql`
    UPDATE callback_events SET
      attempts = attempts + 1, last_attempt_at = now(), next_attempt_at = ${attempt.nextAttemptAt},
      last_http_status = ${attempt.httpStatus}, last_error = ${attempt.error}
    WHERE id = ${String(eventId)} AND status = 'pending'`.execute(db);
  return (result.numAffectedRows ?? 0n) > 0n;
}

/** pending → given_up, after a last failed attempt. */
export async function recordGivenUp(db: Db, eventId: number, attempt: AttemptRecord): Promise<boolean> {
  const result = await sql`
    UPDATE callback_events SET
      status = 'given_up', attempts = attempts + 1, last_attempt_at = now(), finished_at = now(),
      last_http_status = ${attempt.httpStatus}, last_error = ${attempt.error}
    WHERE id = ${String(eventId)} AND status = 'pending'`.execute(db);
  return (result.numAffectedRows ?? 0n) > 0n;
}

/** given_up → pending with a fresh retry window, due now (an operator's retry). */
export async function reopenGivenUp(db: Db, eventId: number): Promise<boolean> {
  const result = await sql`
    UPDATE callback_events SET status = 'pending', window_start_at = now(), next_attempt_at = now(), finished_at = NULL
    WHERE id = ${String(eventId)} AND status = 'given_up'`.execute(db);
  return (result.numAffectedRows ?? 0n) > 0n;
}

/** Heads overdue by more than graceMs: their job may have been lost (the sweeper checks). */
export async function findOverdueHeads(db: Db, graceMs: number, limit: number): Promise<Array<{ id: number; messageId: number }>> {
  const result = await sql<{ id: string; message_id: string }>`
    SELECT e.id, e.message_id FROM callback_events e
    WHERE e.status = 'pending' AND e.next_attempt_at < now() - make_interval(secs => ${graceMs / 1000})
      AND NOT EXISTS (
        SELECT 1 FROM callback_events p WHERE p.message_id = e.message_id AND p.status = 'pending' AND p.id < e.id)
    ORDER BY e.next_attempt_at
    LIMIT ${limit}`.execute(db);
  return result.rows.map((row) => ({ id: Number(row.id), messageId: Number(row.message_id) }));
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

/** Markers older than graceMs: the event that should have settled them was never raised. */
export async function findOverdueOwed(db: Db, graceMs: number, limit: number): Promise<OwedEvent[]> {
  const result = await sql<{ message_id: string; type: string; revision: number }>`
    SELECT message_id, type, revision FROM callback_owed
    WHERE created_at < now() - make_interval(secs => ${graceMs / 1000})
    ORDER BY created_at, message_id
    LIMIT ${limit}`.execute(db);
  return result.rows.map((row) => ({ messageId: Number(row.message_id), type: row.type, revision: row.revision }));
}

/** Forgets a marker whose message has moved on (its later change left a marker of its own). */
export async function forgetOwed(db: Db, owed: OwedEvent): Promise<void> {
  await sql`DELETE FROM callback_owed WHERE message_id = ${String(owed.messageId)} AND type = ${owed.type} AND revision = ${owed.revision}`.execute(db);
}
