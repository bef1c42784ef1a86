import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import type { Db, MessageStatus } from '../db/database.ts';
import type { MessageRecord } from './message.ts';

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
    .values({ ...newMessageValues(message), status: 'failed', error_message: error, error_code: errorCode })
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
  };
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

/** sending → success. `sent_at`: when WebSMS accepted it, in the table's local-time convention. */
export async function recordAccepted(db: Db, id: number, acceptance: Acceptance): Promise<boolean> {
  const result = await db
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
    })
    .where('id', '=', String(id))
    .where('status', '=', 'sending')
    .executeTakeFirst();
  return result.numUpdatedRows > 0n;
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
