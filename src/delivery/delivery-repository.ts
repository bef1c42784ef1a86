import { sql } from 'kysely';
import type { Db, DeliveryStatus } from '../db/database.ts';

// All SQL of delivery status. The poller's queue is `delivery_due`: a narrow row per message still
// being asked about, saying when it is next due (made by recordAccepted, gone once the status is
// final). Claims use FOR UPDATE SKIP LOCKED, so any number of worker processes share the work without
// meeting, and a claim is a lease on that narrow row: a poller that dies mid-check leaves its rows due
// again when the lease ends. The message's own row is written once per check, its result, in columns
// no index holds, so PostgreSQL can update it in place (HOT) without writing index entries.

export interface DueCheck {
  id: number;
  enterpriseNumber: string;
  /** WebSMS's message id; null when the send's answer was lost and the lookup found no id */
  websmsMessageId: number | null;
  /** our unique custom_id towards WebSMS, for statusCustom/sms when there is no message id */
  providerRef: string | null;
  /** checks made so far */
  checks: number;
  /** when WebSMS accepted it */
  sentAt: Date | null;
}

// sent_at is server-local wall time (the old table's convention): as an instant, AT TIME ZONE.
const SENT_INSTANT = sql`(u.sent_at AT TIME ZONE current_setting('TimeZone'))`;
const ms = (value: number) => sql`make_interval(secs => ${value / 1000})`;

/**
 * Claims up to `limit` messages whose next check is due. A message whose check is due before its
 * schedule says (recorded as due at once: a send recorded without the schedule, such as one found by
 * a look-up after an unknown outcome) is rescheduled to sent_at + schedule[checks] without being
 * asked; the others are leased for `leaseMs` and returned to be asked now.
 *
 * Each claimed message's row is read by its key (LATERAL … LIMIT 1, which the planner cannot turn into
 * a join of its choosing): a plan made while user_sms_send's statistics lagged behind its size (a new
 * table filling up, a prepared statement's generic plan) once read the whole table into a hash for
 * every claim of a few dozen checks.
 */
export async function claimDueChecks(db: Db, options: { limit: number; leaseMs: number; scheduleMs: readonly number[] }): Promise<DueCheck[]> {
  const schedule = sql`${`{${options.scheduleMs.join(',')}}`}::bigint[]`;
  const result = await sql<{ id: string; enterprise_number: string; message_id: string | null; provider_ref: string | null; delivery_checks: number; sent_at: Date | null; ask: boolean }>`
    WITH due AS (
      SELECT message_id FROM delivery_due
      WHERE due_at <= now()
      ORDER BY due_at
      LIMIT ${options.limit}
      FOR UPDATE SKIP LOCKED
    ), planned AS (
      SELECT u.id, u.enterprise_number, u.message_id, u.provider_ref, u.delivery_checks, ${SENT_INSTANT} AS sent_at,
             coalesce(${SENT_INSTANT} + make_interval(secs => (${schedule})[u.delivery_checks + 1] / 1000.0), now()) AS due_at
      FROM due CROSS JOIN LATERAL (
        SELECT id, enterprise_number, message_id, provider_ref, delivery_checks, sent_at FROM user_sms_send WHERE id = due.message_id LIMIT 1
      ) u
    )
    UPDATE delivery_due c
    SET due_at = CASE WHEN p.due_at > now() THEN p.due_at ELSE now() + ${ms(options.leaseMs)} END
    FROM planned p
    WHERE c.message_id = p.id
    RETURNING p.id, p.enterprise_number, p.message_id, p.provider_ref, p.delivery_checks, p.sent_at, p.due_at <= now() AS ask`.execute(db);
  return result.rows
    .filter((row) => row.ask)
    .map((row) => ({
      id: Number(row.id),
      enterpriseNumber: row.enterprise_number,
      websmsMessageId: row.message_id === null ? null : Number(row.message_id),
      providerRef: row.provider_ref,
      checks: row.delivery_checks,
      sentAt: row.sent_at,
    }));
}

export type CheckResult =
  /** WebSMS gave a status code */
  | { kind: 'status'; code: number; status: DeliveryStatus }
  /** WebSMS has no such message */
  | { kind: 'not-found' }
  /** the look-up failed; it says nothing about the message, and uses up a check */
  | { kind: 'failed' };

/** A message whose check was recorded, as the recording left it. */
export interface RecordedCheck {
  id: number;
  enterpriseNumber: string;
  deliveryStatus: DeliveryStatus;
}

/**
 * Records a round's checks in one statement. Final (delivered, undelivered, or not found: unknown)
 * ends the polling; not final schedules the next check at sent_at + schedule[checks + 1], or ends as
 * `unknown` after the last. Returns the messages recorded (not those no longer pending). A final
 * status of a message with a callback_url leaves its event owed (callback_owed).
 */
export async function recordChecks(db: Db, checks: ReadonlyArray<{ id: number; result: CheckResult }>, scheduleMs: readonly number[]): Promise<RecordedCheck[]> {
  if (checks.length === 0) return [];
  // Row locks in id order: two statements over the same rows never wait on each other crosswise.
  const sorted = [...checks].sort((a, b) => a.id - b.id);
  const ids = sorted.map((c) => String(c.id));
  const codes = sorted.map((c) => (c.result.kind === 'status' ? c.result.code : null));
  const finals = sorted.map(({ result }) => (result.kind === 'status' && result.status !== 'pending' ? result.status : result.kind === 'not-found' ? 'unknown' : null));
  const schedule = sql`${`{${scheduleMs.join(',')}}`}::bigint[]`;
  const last = scheduleMs.length;
  // The message's row takes the result; its delivery_due row is moved to the next check, or goes
  // when the status is final (or its message is no longer pending: nothing is left to ask).
  const result = await sql<{ id: string; enterprise_number: string; delivery_status: DeliveryStatus }>`
    WITH r AS (
      SELECT id, code, final FROM unnest(${ids}::bigint[], ${codes}::smallint[], ${finals}::text[]) AS r (id, code, final)
    ), recorded AS (
      UPDATE user_sms_send u SET
        delivery_code = coalesce(r.code, u.delivery_code),
        delivery_checks = u.delivery_checks + 1,
        delivery_status = CASE WHEN r.final IS NOT NULL THEN r.final WHEN u.delivery_checks + 1 >= ${last} THEN 'unknown' ELSE 'pending' END,
        delivered_at = CASE WHEN r.final IS NULL THEN u.delivered_at WHEN r.final = 'unknown' THEN NULL ELSE now() END
      FROM r
      WHERE u.id = r.id AND u.delivery_status = 'pending'
      RETURNING u.id, u.enterprise_number, u.delivery_status,
        CASE WHEN u.delivery_status = 'pending' THEN ${SENT_INSTANT} + make_interval(secs => (${schedule})[u.delivery_checks + 1] / 1000.0) END AS next_due
    ), rescheduled AS (
      UPDATE delivery_due c SET due_at = x.next_due FROM recorded x WHERE c.message_id = x.id AND x.next_due IS NOT NULL
      RETURNING c.message_id
    ), finished AS (
      DELETE FROM delivery_due c USING r WHERE c.message_id = r.id AND NOT EXISTS (SELECT 1 FROM recorded x WHERE x.id = r.id AND x.next_due IS NOT NULL)
    )
    SELECT id, enterprise_number, delivery_status FROM recorded`.execute(db);
  return result.rows.map((row) => ({
    id: Number(row.id),
    enterpriseNumber: row.enterprise_number,
    deliveryStatus: row.delivery_status,
  }));
}

/** WebSMS asked us to slow down (error 7): these messages are asked again after `delayMs`, no check used. */
export async function postponeChecks(db: Db, ids: readonly number[], delayMs: number): Promise<void> {
  if (ids.length === 0) return;
  await sql`
    UPDATE delivery_due SET due_at = now() + ${ms(delayMs)}
    WHERE message_id = ANY(${ids.map(String)}::bigint[])`.execute(db);
}

export interface PolledMessage {
  id: number;
  enterpriseNumber: string;
  checks: number;
  nextCheckAt: Date;
  deliveryCode: number | null;
  sentAt: Date | null;
}

/** What is still being asked about, soonest first (`npm run jobs -- polling`). */
export async function listPolled(db: Db, filter: { enterprise?: string | undefined; limit: number }): Promise<PolledMessage[]> {
  const result = await sql<{ id: string; enterprise_number: string; delivery_checks: number; due_at: Date; delivery_code: number | null; sent_at: Date | null }>`
    SELECT u.id, u.enterprise_number, u.delivery_checks, c.due_at, u.delivery_code, ${SENT_INSTANT} AS sent_at
    FROM delivery_due c JOIN user_sms_send u ON u.id = c.message_id
    ${filter.enterprise === undefined ? sql`` : sql`WHERE u.enterprise_number = ${filter.enterprise}`}
    ORDER BY c.due_at
    LIMIT ${filter.limit}`.execute(db);
  return result.rows.map((row) => ({
    id: Number(row.id),
    enterpriseNumber: row.enterprise_number,
    checks: row.delivery_checks,
    nextCheckAt: row.due_at,
    deliveryCode: row.delivery_code,
    sentAt: row.sent_at,
  }));
}
