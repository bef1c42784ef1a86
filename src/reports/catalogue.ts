import type { Db } from '../db/database.ts';
import { maskPhone } from '../logger.ts';
import { deliveryRates, enterpriseMessages, failedMessages, recentMessages, spendLast30Days, todayStats, undeliveredMessages, unknownEnterpriseAttempts } from './queries.ts';

// The reports operators know from the old documentation, by name: one catalogue for
// `npm run report -- <name>` and `GET /reports/<name>`, so both always offer the same reports with
// the same parameters.

/** A report's row: plain fields, snake_case as in the old queries. */
export type ReportRow = object;

export interface ReportColumn {
  key: string;
  align: 'left' | 'right';
  /** holds a phone number: masked in HTTP answers */
  phone?: boolean;
}

export interface ReportDefinition {
  name: string;
  description: string;
  /** whether `enterprise` is needed, optional, or meaningless for this report */
  enterprise: 'required' | 'optional' | 'none';
  defaultLimit: number;
  /** what a table shows, in order; JSON carries every field */
  columns: readonly ReportColumn[];
  run(db: Db, params: ReportParams): Promise<ReportRow[]>;
}

export interface ReportParams {
  enterprise?: string | undefined;
  limit: number;
}

export const MAX_REPORT_LIMIT = 10_000;

const left = (key: string, extra: Partial<ReportColumn> = {}): ReportColumn => ({ key, align: 'left', ...extra });
const right = (key: string): ReportColumn => ({ key, align: 'right' });

const definitions: ReportDefinition[] = [
  {
    name: 'today',
    description: "Today's messages per enterprise: count, cost, successful, failed (created_at >= CURRENT_DATE)",
    enterprise: 'optional',
    defaultLimit: 1_000,
    columns: [left('enterprise_number'), left('enterprise_name'), right('sms_count'), right('total_cost'), right('successful'), right('failed'), right('in_progress'), right('unknown')],
    run: (db, p) => todayStats(db, p),
  },
  {
    name: 'enterprise',
    description: "One enterprise's latest messages (needs --enterprise / ?enterprise=)",
    enterprise: 'required',
    defaultLimit: 10,
    columns: [right('id'), left('phone', { phone: true }), left('message_preview'), left('status'), right('amount'), left('created_at')],
    run: (db, p) => enterpriseMessages(db, p.enterprise ?? '', p.limit),
  },
  {
    name: 'recent',
    description: 'The latest messages of all enterprises',
    enterprise: 'optional',
    defaultLimit: 15,
    columns: [right('id'), left('enterprise'), left('phone', { phone: true }), left('message'), left('status'), right('amount'), left('sent_time')],
    run: (db, p) => recentMessages(db, p),
  },
  {
    name: 'failures',
    description: "Failed messages, newest first (status = 'failed')",
    enterprise: 'optional',
    defaultLimit: 100,
    columns: [right('id'), left('enterprise_number'), left('enterprise_name'), left('phone', { phone: true }), left('message'), left('error_message'), left('created_at')],
    run: (db, p) => failedMessages(db, p),
  },
  {
    name: 'spend',
    description: 'Successful messages and their cost per enterprise over the last 30 days',
    enterprise: 'optional',
    defaultLimit: 1_000,
    columns: [left('enterprise_number'), left('enterprise_name'), right('total_sms'), right('total_spent'), right('avg_cost_per_sms'), right('total_parts')],
    run: (db, p) => spendLast30Days(db, p),
  },
  {
    name: 'delivery',
    description: 'Delivery per enterprise over the last 7 days: sent, delivered, undelivered, unknown, still pending, and the delivery rate',
    enterprise: 'optional',
    defaultLimit: 1_000,
    columns: [left('enterprise_number'), left('enterprise_name'), right('sent'), right('delivered'), right('undelivered'), right('unknown'), right('pending'), right('delivery_rate_pct')],
    run: (db, p) => deliveryRates(db, p),
  },
  {
    name: 'undelivered',
    description: 'Sent SMS that did not reach the phone, or whose delivery stayed unknown, last 7 days, newest first',
    enterprise: 'optional',
    defaultLimit: 100,
    columns: [right('id'), left('enterprise_number'), left('phone', { phone: true }), left('delivery_status'), right('delivery_code'), left('sent_at')],
    run: (db, p) => undeliveredMessages(db, p),
  },
  {
    name: 'audit',
    description: 'Attempts to send for unknown or unconfigured enterprises in the last 7 days, by service, IP and user agent',
    enterprise: 'none',
    defaultLimit: 1_000,
    columns: [left('service_name'), left('request_ip'), left('user_agent'), right('count')],
    run: (db, p) => unknownEnterpriseAttempts(db, p.limit),
  },
];

export const REPORTS: ReadonlyMap<string, ReportDefinition> = new Map(definitions.map((d) => [d.name, d]));
export const REPORT_NAMES: readonly string[] = definitions.map((d) => d.name);

export type ParamsCheck = { ok: true; params: ReportParams } | { ok: false; field: 'enterprise' | 'limit'; message: string };

/** The same checks for the command line and HTTP. Raw values: undefined when not given. */
export function checkReportParams(report: ReportDefinition, raw: { enterprise?: string | undefined; limit?: string | undefined }): ParamsCheck {
  const { enterprise } = raw;
  if (enterprise !== undefined && (enterprise.length < 1 || enterprise.length > 10)) {
    return { ok: false, field: 'enterprise', message: 'must be 1-10 characters' };
  }
  if (report.enterprise === 'required' && enterprise === undefined) {
    return { ok: false, field: 'enterprise', message: `is required for the ${report.name} report` };
  }
  if (report.enterprise === 'none' && enterprise !== undefined) {
    return { ok: false, field: 'enterprise', message: `does not apply to the ${report.name} report` };
  }
  let limit = report.defaultLimit;
  if (raw.limit !== undefined) {
    if (!/^\d{1,6}$/.test(raw.limit) || Number(raw.limit) < 1 || Number(raw.limit) > MAX_REPORT_LIMIT) {
      return { ok: false, field: 'limit', message: `must be a whole number from 1 to ${MAX_REPORT_LIMIT}` };
    }
    limit = Number(raw.limit);
  }
  return { ok: true, params: { enterprise, limit } };
}

/** HTTP answers never carry a phone in clear; the terminal may (the old queries showed them). */
export function maskReportPhones(report: ReportDefinition, rows: readonly ReportRow[]): Array<Record<string, unknown>> {
  const phoneKeys = report.columns.filter((c) => c.phone).map((c) => c.key);
  return rows.map((row) => {
    const copy: Record<string, unknown> = { ...row };
    for (const key of phoneKeys) if (typeof copy[key] === 'string') copy[key] = maskPhone(copy[key]);
    return copy;
  });
}
