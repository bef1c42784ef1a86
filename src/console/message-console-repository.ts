import { sql, type RawBuilder } from 'kysely';
import type { Db, DeliveryStatus, MessageStatus } from '../db/database.ts';
import type { OperatorActionEntry } from '../messages/repository.ts';
import { PAGE_SIZE, type SearchCriteria } from './message-search.ts';

// The console's SQL on user_sms_send: a bounded search and one message's whole row. Never selected:
// status_key_hashes (callers' capabilities) and anything of enterprises.custom_domain (WebSMS keys).
//
// Every search is ordered newest first (created_at, then id) and reads one page. Which index serves it:
// - id                          → user_sms_send_pkey (one row)
// - enterprise (± time range)   → idx_user_sms_enterprise_created (enterprise_number, created_at), read backwards
// - phone                       → idx_user_sms_phone
// - custom_id                   → idx_user_sms_custom_id
// - WebSMS message_id           → idx_user_sms_message_id
// - time range alone, or nothing → idx_user_sms_created_at, read backwards and stopped after a page
// The bounds compare created_at as it is stored (server-local wall time), so the indexes apply; the
// page cursor is a message id whose own created_at bounds the next page.

/** A statement the console runs may take this long; a search that would take longer is refused (422). */
export const SEARCH_TIMEOUT_MS = 5_000;

export interface MessageSummary {
  id: number;
  enterpriseNumber: string;
  phone: string;
  sender: string | null;
  customId: string | null;
  status: MessageStatus;
  websmsMessageId: string | null;
  textPreview: string;
  errorCode: string | null;
  deliveryStatus: DeliveryStatus | null;
  createdAt: Date | null;
  sentAt: Date | null;
}

interface SummaryRow {
  id: string;
  enterprise_number: string;
  phone: string;
  sender: string | null;
  custom_id: string | null;
  status: MessageStatus;
  message_id: string | null;
  text_preview: string | null;
  error_code: string | null;
  delivery_status: DeliveryStatus | null;
  created_at: Date | null;
  sent_at: Date | null;
}

/** `created_at`/`sent_at` are server-local wall time; read as instants, as repository.ts does. */
const instant = (column: 'created_at' | 'sent_at') => sql`${sql.ref(column)} AT TIME ZONE current_setting('TimeZone')`;

/** Newest first, at most PAGE_SIZE + 1 rows: one more than a page says whether there is an older one. */
export async function searchMessages(db: Db, criteria: SearchCriteria): Promise<MessageSummary[]> {
  const rows = await withTimeout(db, (trx) => searchStatement(criteria).execute(trx));
  return rows.rows.map((row) => ({
    id: Number(row.id),
    enterpriseNumber: row.enterprise_number,
    phone: row.phone,
    sender: row.sender,
    customId: row.custom_id,
    status: row.status,
    websmsMessageId: row.message_id,
    textPreview: row.text_preview ?? '',
    errorCode: row.error_code,
    deliveryStatus: row.delivery_status,
    createdAt: row.created_at,
    sentAt: row.sent_at,
  }));
}

/** The search's one statement (exported for the test that checks its plans use the indexes). */
export function searchStatement(criteria: SearchCriteria): RawBuilder<SummaryRow> {
  const conditions: RawBuilder<unknown>[] = [];
  if (criteria.id !== undefined) conditions.push(sql`id = ${String(criteria.id)}`);
  if (criteria.enterprise !== undefined) conditions.push(sql`enterprise_number = ${criteria.enterprise}`);
  if (criteria.phone !== undefined) conditions.push(sql`phone = ${criteria.phone}`);
  if (criteria.customId !== undefined) conditions.push(sql`custom_id = ${criteria.customId}`);
  if (criteria.websmsMessageId !== undefined) conditions.push(sql`message_id = ${criteria.websmsMessageId}::bigint`);
  if (criteria.from !== undefined) conditions.push(sql`created_at >= ${criteria.from}::timestamp`);
  if (criteria.to !== undefined) conditions.push(sql`created_at <= ${criteria.to}::timestamp`);
  if (criteria.before !== undefined) {
    // The cursor's own created_at bounds the scan (an index condition); ties are broken by id.
    const cursor = sql`(SELECT c.created_at FROM user_sms_send c WHERE c.id = ${String(criteria.before)})`;
    conditions.push(sql`created_at <= ${cursor} AND (created_at < ${cursor} OR id < ${String(criteria.before)})`);
  }
  const where = conditions.length === 0 ? sql`` : sql`WHERE ${sql.join(conditions, sql` AND `)}`;
  // Qualified: a bare `created_at` in ORDER BY would name the output column (the converted instant),
  // which no index has, and PostgreSQL would sort the whole table for every page.
  return sql<SummaryRow>`
    SELECT id, enterprise_number, phone, sender, custom_id, status, message_id, left(text, 50) AS text_preview,
      error_code, delivery_status, ${instant('created_at')} AS created_at, ${instant('sent_at')} AS sent_at
    FROM user_sms_send
    ${where}
    ORDER BY user_sms_send.created_at DESC, user_sms_send.id DESC
    LIMIT ${PAGE_SIZE + 1}`;
}

/** Everything the message page tells about one message, from its row. */
export interface MessageStory {
  id: number;
  enterpriseNumber: string;
  enterpriseName: string | null;
  phone: string;
  text: string;
  sender: string | null;
  customId: string | null;
  serviceName: string | null;
  requestIp: string | null;
  userAgent: string | null;
  status: MessageStatus;
  providerRef: string | null;
  attempts: number;
  notBefore: Date | null;
  claimedAt: Date | null;
  createdAt: Date | null;
  sentAt: Date | null;
  updatedAt: Date;
  resentAfterUnknown: boolean;
  websmsMessageId: string | null;
  price: string | null;
  parts: number | null;
  amount: string | null;
  error: string | null;
  errorCode: string | null;
  /** WebSMS's full answer, as stored */
  response: unknown;
  callbackUrl: string | null;
  deliveryStatus: DeliveryStatus | null;
  deliveryCode: number | null;
  deliveredAt: Date | null;
  deliveryChecks: number;
  deliveryNextCheckAt: Date | null;
  operatorActions: OperatorActionEntry[];
}

interface StoryRow {
  id: string;
  enterprise_number: string;
  enterprise_name: string | null;
  phone: string;
  text: string;
  sender: string | null;
  custom_id: string | null;
  service_name: string | null;
  request_ip: string | null;
  user_agent: string | null;
  status: MessageStatus;
  provider_ref: string | null;
  attempts: number;
  not_before: Date | null;
  claimed_at: Date | null;
  created_at: Date | null;
  sent_at: Date | null;
  updated_at: Date;
  resent_after_unknown: boolean;
  message_id: string | null;
  price: string | null;
  parts: number | null;
  amount: string | null;
  error_message: string | null;
  error_code: string | null;
  response_data: unknown;
  callback_url: string | null;
  delivery_status: DeliveryStatus | null;
  delivery_code: number | null;
  delivered_at: Date | null;
  delivery_checks: number;
  delivery_next_check_at: Date | null;
  operator_actions: unknown;
}

export async function findMessageStory(db: Db, id: number): Promise<MessageStory | undefined> {
  const result = await withTimeout(db, (trx) =>
    sql<StoryRow>`
      SELECT id, enterprise_number, enterprise_name, phone, text, sender, custom_id, service_name, host(request_ip) AS request_ip,
        user_agent, status, provider_ref, attempts, not_before, claimed_at, ${instant('created_at')} AS created_at,
        ${instant('sent_at')} AS sent_at, updated_at, resent_after_unknown, message_id, price, parts, amount, error_message,
        error_code, response_data, callback_url, delivery_status, delivery_code, delivered_at, delivery_checks,
        (SELECT due_at FROM delivery_due WHERE message_id = u.id) AS delivery_next_check_at, operator_actions
      FROM user_sms_send u WHERE id = ${String(id)}`.execute(trx),
  );
  const row = result.rows[0];
  if (!row) return undefined;
  return {
    id: Number(row.id),
    enterpriseNumber: row.enterprise_number,
    enterpriseName: row.enterprise_name,
    phone: row.phone,
    text: row.text,
    sender: row.sender,
    customId: row.custom_id,
    serviceName: row.service_name,
    requestIp: row.request_ip,
    userAgent: row.user_agent,
    status: row.status,
    providerRef: row.provider_ref,
    attempts: row.attempts,
    notBefore: row.not_before,
    claimedAt: row.claimed_at,
    createdAt: row.created_at,
    sentAt: row.sent_at,
    updatedAt: row.updated_at,
    resentAfterUnknown: row.resent_after_unknown,
    websmsMessageId: row.message_id,
    price: row.price,
    parts: row.parts,
    amount: row.amount,
    error: row.error_message,
    errorCode: row.error_code,
    response: row.response_data,
    callbackUrl: row.callback_url,
    deliveryStatus: row.delivery_status,
    deliveryCode: row.delivery_code,
    deliveredAt: row.delivered_at,
    deliveryChecks: row.delivery_checks,
    deliveryNextCheckAt: row.delivery_next_check_at,
    operatorActions: Array.isArray(row.operator_actions) ? (row.operator_actions as OperatorActionEntry[]) : [],
  };
}

/** PostgreSQL's code for a statement cancelled by statement_timeout. */
export const QUERY_CANCELED = '57014';

/** One statement under the console's own, shorter timeout (SET LOCAL ends with the transaction). */
async function withTimeout<T>(db: Db, run: (trx: Db) => Promise<T>): Promise<T> {
  return db.transaction().execute(async (trx) => {
    await sql`SELECT set_config('statement_timeout', ${String(SEARCH_TIMEOUT_MS)}, true)`.execute(trx);
    return run(trx);
  });
}
