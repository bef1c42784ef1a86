import { sql, type RawBuilder } from 'kysely';
import type { Db } from '../db/database.ts';

// The old documentation's "useful queries" (websms_user_send.ru.md), one function per statement,
// with their semantics kept: the same filters (`created_at >= CURRENT_DATE`, 30 and 7 days back from
// CURRENT_DATE, `status = 'failed'`, `error_message LIKE '%not found%'`), the same grouping and the
// same column names. Additions are columns (ids, error codes, rows still in flight), never changed
// filters. created_at is a server-local TIMESTAMP (the old convention); rows return it as a real
// instant, read in the session's time zone, as findMessage does.

export interface EnterpriseFilter {
  /** only this enterprise's rows */
  enterprise?: string | undefined;
}

export interface LimitedFilter extends EnterpriseFilter {
  limit: number;
}

const createdAtInstant = sql<Date>`created_at AT TIME ZONE current_setting('TimeZone')`;

function andEnterprise(filter: EnterpriseFilter): RawBuilder<unknown> {
  return filter.enterprise === undefined ? sql`` : sql`AND enterprise_number = ${filter.enterprise}`;
}

// DECIMAL and COUNT arrive as strings from pg.
const num = (value: string | number | null): number | null => (value === null ? null : Number(value));

export interface TodayRow {
  enterprise_number: string;
  enterprise_name: string | null;
  sms_count: number;
  total_cost: number | null;
  successful: number;
  failed: number;
  /** added: pending, queued or sending */
  in_progress: number;
  /** added: outcome unknown (may have been sent) */
  unknown: number;
}

/** "Статистика по предприятиям за день". */
export async function todayStats(db: Db, filter: LimitedFilter): Promise<TodayRow[]> {
  const { rows } = await sql<Record<keyof TodayRow, string | null>>`
    SELECT
      enterprise_number,
      enterprise_name,
      COUNT(*) AS sms_count,
      SUM(amount) AS total_cost,
      COUNT(CASE WHEN status = 'success' THEN 1 END) AS successful,
      COUNT(CASE WHEN status = 'failed' THEN 1 END) AS failed,
      COUNT(CASE WHEN status IN ('pending', 'queued', 'sending') THEN 1 END) AS in_progress,
      COUNT(CASE WHEN status = 'unknown' THEN 1 END) AS unknown
    FROM user_sms_send
    WHERE created_at >= CURRENT_DATE ${andEnterprise(filter)}
    GROUP BY enterprise_number, enterprise_name
    ORDER BY sms_count DESC, enterprise_number
    LIMIT ${filter.limit}`.execute(db);
  return rows.map((r) => ({
    enterprise_number: r.enterprise_number ?? '',
    enterprise_name: r.enterprise_name,
    sms_count: Number(r.sms_count),
    total_cost: num(r.total_cost),
    successful: Number(r.successful),
    failed: Number(r.failed),
    in_progress: Number(r.in_progress),
    unknown: Number(r.unknown),
  }));
}

export interface EnterpriseMessageRow {
  /** added: the message id, for `npm run jobs` and GET /messages/{id} */
  id: number;
  phone: string;
  message_preview: string;
  status: string;
  amount: number | null;
  created_at: Date | null;
}

/** "SMS конкретного предприятия": its latest messages. */
export async function enterpriseMessages(db: Db, enterprise: string, limit: number): Promise<EnterpriseMessageRow[]> {
  const { rows } = await sql<{ id: string; phone: string; message_preview: string; status: string; amount: string | null; created_at: Date | null }>`
    SELECT
      id,
      phone,
      LEFT(text, 50) AS message_preview,
      status,
      amount,
      ${createdAtInstant} AS created_at
    FROM user_sms_send
    WHERE enterprise_number = ${enterprise}
    ORDER BY user_sms_send.created_at DESC, id DESC
    LIMIT ${limit}`.execute(db);
  return rows.map((r) => ({ ...r, id: Number(r.id), amount: num(r.amount) }));
}

export interface RecentRow {
  id: number;
  enterprise: string;
  enterprise_number: string;
  phone: string;
  message: string;
  status: string;
  amount: number | null;
  /** the old query's 'DD.MM HH24:MI' of created_at, as stored */
  sent_time: string | null;
  created_at: Date | null;
}

/** "Последние отправки всех предприятий". */
export async function recentMessages(db: Db, filter: LimitedFilter): Promise<RecentRow[]> {
  // The old `number || ' (' || name || ')'` is NULL for an enterprise without a name, which hid
  // the number too; the coalesce keeps the number.
  const { rows } = await sql<Omit<RecentRow, 'id' | 'amount'> & { id: string; amount: string | null }>`
    SELECT
      id,
      enterprise_number || COALESCE(' (' || enterprise_name || ')', '') AS enterprise,
      enterprise_number,
      phone,
      LEFT(text, 30) AS message,
      status,
      amount,
      TO_CHAR(created_at, 'DD.MM HH24:MI') AS sent_time,
      ${createdAtInstant} AS created_at
    FROM user_sms_send
    WHERE TRUE ${andEnterprise(filter)}
    ORDER BY user_sms_send.created_at DESC, id DESC
    LIMIT ${filter.limit}`.execute(db);
  return rows.map((r) => ({ ...r, id: Number(r.id), amount: num(r.amount) }));
}

export interface FailureRow {
  id: number;
  enterprise_number: string;
  enterprise_name: string | null;
  phone: string;
  message: string;
  error_message: string | null;
  /** added: the stable code behind the message */
  error_code: string | null;
  created_at: Date | null;
}

/** "Неудачные отправки по предприятиям" (the old query had no limit; a terminal needs one). */
export async function failedMessages(db: Db, filter: LimitedFilter): Promise<FailureRow[]> {
  // PostgreSQL returns BIGINT as a string; the row type is otherwise the report's own.
  const { rows } = await sql<Omit<FailureRow, 'id'> & { id: string }>`
    SELECT
      id,
      enterprise_number,
      enterprise_name,
      phone,
      LEFT(text, 40) AS message,
      error_message,
      error_code,
      ${createdAtInstant} AS created_at
    FROM user_sms_send
    WHERE status = 'failed' ${andEnterprise(filter)}
    ORDER BY user_sms_send.created_at DESC, id DESC
    LIMIT ${filter.limit}`.execute(db);
  return rows.map((r) => ({ ...r, id: Number(r.id) }));
}

export interface SpendRow {
  enterprise_number: string;
  enterprise_name: string | null;
  total_sms: number;
  total_spent: number | null;
  avg_cost_per_sms: number | null;
  total_parts: number | null;
}

/** "Статистика расходов по предприятиям": successful sends of the last 30 days. */
export async function spendLast30Days(db: Db, filter: LimitedFilter): Promise<SpendRow[]> {
  // NULLS LAST: an enterprise whose amounts are unknown (found by a lookup, which carries no price)
  // would otherwise head a DESC list.
  const { rows } = await sql<Record<keyof SpendRow, string | null>>`
    SELECT
      enterprise_number,
      enterprise_name,
      COUNT(*) AS total_sms,
      SUM(amount) AS total_spent,
      ROUND(AVG(amount), 6) AS avg_cost_per_sms,
      SUM(parts) AS total_parts
    FROM user_sms_send
    WHERE status = 'success'
      AND created_at >= CURRENT_DATE - INTERVAL '30 days' ${andEnterprise(filter)}
    GROUP BY enterprise_number, enterprise_name
    ORDER BY total_spent DESC NULLS LAST, enterprise_number
    LIMIT ${filter.limit}`.execute(db);
  return rows.map((r) => ({
    enterprise_number: r.enterprise_number ?? '',
    enterprise_name: r.enterprise_name,
    total_sms: Number(r.total_sms),
    total_spent: num(r.total_spent),
    avg_cost_per_sms: num(r.avg_cost_per_sms),
    total_parts: num(r.total_parts),
  }));
}

export interface AuditRow {
  service_name: string | null;
  request_ip: string | null;
  user_agent: string | null;
  count: number;
}

/** "Аудит безопасности": attempts to send for unknown enterprises in the last 7 days. */
export async function unknownEnterpriseAttempts(db: Db, limit: number): Promise<AuditRow[]> {
  const { rows } = await sql<{ service_name: string | null; request_ip: string | null; user_agent: string | null; count: string }>`
    SELECT service_name, request_ip, user_agent, COUNT(*) AS count
    FROM user_sms_send
    WHERE status = 'failed'
      AND error_message LIKE '%not found%'
      AND created_at >= CURRENT_DATE - INTERVAL '7 days'
    GROUP BY service_name, request_ip, user_agent
    ORDER BY count DESC, service_name NULLS LAST, request_ip NULLS LAST
    LIMIT ${limit}`.execute(db);
  return rows.map((r) => ({ ...r, count: Number(r.count) }));
}

export interface DeliveryRateRow {
  enterprise_number: string;
  enterprise_name: string | null;
  /** accepted by WebSMS and asked about (sends before delivery status was polled are left out) */
  sent: number;
  delivered: number;
  undelivered: number;
  unknown: number;
  /** still being asked about */
  pending: number;
  /** delivered among those with a final status, in percent; null while none is final */
  delivery_rate_pct: number | null;
}

/** Delivery per enterprise over the last 7 days (src/delivery/): how many of its sent SMS reached the phone. */
export async function deliveryRates(db: Db, filter: LimitedFilter): Promise<DeliveryRateRow[]> {
  const { rows } = await sql<Record<keyof DeliveryRateRow, string | null>>`
    SELECT
      enterprise_number,
      enterprise_name,
      COUNT(*) AS sent,
      COUNT(*) FILTER (WHERE delivery_status = 'delivered') AS delivered,
      COUNT(*) FILTER (WHERE delivery_status = 'undelivered') AS undelivered,
      COUNT(*) FILTER (WHERE delivery_status = 'unknown') AS unknown,
      COUNT(*) FILTER (WHERE delivery_status = 'pending') AS pending,
      ROUND(100.0 * COUNT(*) FILTER (WHERE delivery_status = 'delivered')
        / NULLIF(COUNT(*) FILTER (WHERE delivery_status <> 'pending'), 0), 1) AS delivery_rate_pct
    FROM user_sms_send
    WHERE status = 'success' AND delivery_status IS NOT NULL
      AND created_at >= CURRENT_DATE - INTERVAL '7 days' ${andEnterprise(filter)}
    GROUP BY enterprise_number, enterprise_name
    ORDER BY sent DESC, enterprise_number
    LIMIT ${filter.limit}`.execute(db);
  return rows.map((r) => ({
    enterprise_number: r.enterprise_number ?? '',
    enterprise_name: r.enterprise_name,
    sent: Number(r.sent),
    delivered: Number(r.delivered),
    undelivered: Number(r.undelivered),
    unknown: Number(r.unknown),
    pending: Number(r.pending),
    delivery_rate_pct: num(r.delivery_rate_pct),
  }));
}

export interface UndeliveredRow {
  id: number;
  enterprise_number: string;
  phone: string;
  delivery_status: string;
  /** WebSMS's last status code: 2 rejected, 4 not delivered, 0/1/5 never final */
  delivery_code: number | null;
  sent_at: Date | null;
}

/** Sent SMS that did not reach the phone (undelivered) or whose fate stayed unknown, last 7 days, newest first. */
export async function undeliveredMessages(db: Db, filter: LimitedFilter): Promise<UndeliveredRow[]> {
  const { rows } = await sql<{ id: string; enterprise_number: string; phone: string; delivery_status: string; delivery_code: number | null; sent_at: Date | null }>`
    SELECT id, enterprise_number, phone, delivery_status, delivery_code, sent_at AT TIME ZONE current_setting('TimeZone') AS sent_at
    FROM user_sms_send
    WHERE delivery_status IN ('undelivered', 'unknown')
      AND created_at >= CURRENT_DATE - INTERVAL '7 days' ${andEnterprise(filter)}
    ORDER BY user_sms_send.created_at DESC, id DESC
    LIMIT ${filter.limit}`.execute(db);
  return rows.map((r) => ({ ...r, id: Number(r.id) }));
}
