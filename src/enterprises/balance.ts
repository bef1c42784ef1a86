import { sql } from 'kysely';
import type { Db } from '../db/database.ts';
import { WebsmsError, type Balance, type WebsmsCredentials } from '../websms/client.ts';
import { findEnterprise, type Enterprise } from './repository.ts';
import { parseCustomDomain } from './credentials.ts';

// An enterprise's WebSMS balance: the use case behind `npm run balance` and
// `GET /enterprises/{number}/balance`, and the old service's Russian output format
// (websms_user_send.ru.md, "Проверка баланса предприятия"), kept line for line because operators
// read it and scripts grep it. The API key is used for the call and goes nowhere else.

export interface BalancePorts {
  db: Db;
  websms: { balance(credentials: WebsmsCredentials): Promise<Balance> };
}

export const CURRENCY = 'BYN';

export type BalanceCheck =
  | {
      kind: 'ok';
      enterpriseNumber: string;
      enterpriseName: string | null;
      websmsUser: string;
      active: boolean;
      sms: number;
      viber: number;
      total: number;
    }
  /** unknown enterprise, or custom_domain empty / malformed (or inactive, when active ones were asked for) */
  | { kind: 'not-configured'; enterpriseNumber: string }
  | {
      kind: 'websms-error';
      enterpriseNumber: string;
      enterpriseName: string | null;
      websmsUser: string;
      /** 'websms_<n>', 'timeout', 'unreachable', 'bad_response' */
      code: string;
      message: string;
    };

export interface BalanceOptions {
  /** true: an inactive enterprise counts as not configured (as for sending) */
  activeOnly: boolean;
}

export async function checkBalance(ports: BalancePorts, enterpriseNumber: string, options: BalanceOptions): Promise<BalanceCheck> {
  const enterprise = await findEnterprise(ports.db, enterpriseNumber);
  if (!enterprise || !enterprise.credentials || (options.activeOnly && !enterprise.active)) {
    return { kind: 'not-configured', enterpriseNumber };
  }
  return checkEnterpriseBalance(ports, enterprise);
}

/** WebSMS amounts carry 6 decimals (DECIMAL(10,6) in the table); sums are rounded to that, so 0.1 + 0.2 reads 0.3. */
export function roundAmount(value: number): number {
  return Math.round(value * 1e6) / 1e6;
}

export async function checkEnterpriseBalance(ports: BalancePorts, enterprise: Enterprise): Promise<BalanceCheck> {
  const { credentials } = enterprise;
  if (!credentials) return { kind: 'not-configured', enterpriseNumber: enterprise.number };
  const identity = { enterpriseNumber: enterprise.number, enterpriseName: enterprise.name, websmsUser: credentials.user };
  try {
    const balance = await ports.websms.balance(credentials);
    return { kind: 'ok', ...identity, active: enterprise.active, sms: balance.sms, viber: balance.viber, total: roundAmount(balance.sms + balance.viber) };
  } catch (error) {
    if (!(error instanceof WebsmsError)) throw error;
    // The client scrubs its texts already; this is the last line before a terminal or an answer.
    return { kind: 'websms-error', ...identity, code: error.code, message: error.message.split(credentials.apiKey).join('[redacted]') };
  }
}

/**
 * What `--all` checks: active enterprises with something in custom_domain — the old documentation's
 * loop (`custom_domain IS NOT NULL AND custom_domain != '' AND active = true`), except that a NULL
 * `active` counts as active, as it does for sending. A value that is present but malformed is
 * checked too, so that it shows up as an error instead of being skipped.
 */
export async function findEnterprisesForBalance(db: Db): Promise<Enterprise[]> {
  const rows = await db
    .selectFrom('enterprises')
    .select(['number', 'name', 'custom_domain', 'active'])
    .where('custom_domain', 'is not', null)
    .where(sql<boolean>`btrim(custom_domain) <> ''`)
    // NULL counts as active, as for sending (only an explicit false disables an enterprise).
    .where(sql<boolean>`active IS DISTINCT FROM false`)
    .orderBy('number')
    .execute();
  return rows.map((r) => ({ number: r.number, name: r.name, credentials: parseCustomDomain(r.custom_domain), active: r.active !== false }));
}

// ── The old output format ──────────────────────────────────────────────────────────────────────

const HEAVY_RULE = '='.repeat(60);
const LIGHT_RULE = '-'.repeat(60);

/** Amounts as the old (Python) tool printed them: 39.056508, 0 — no padding, no exponent. */
export function formatAmount(value: number): string {
  const rounded = roundAmount(value);
  if (Object.is(rounded, -0)) return '0';
  // toFixed avoids exponent notation for tiny values; trailing zeros are dropped as Python's repr does.
  return rounded.toFixed(6).replace(/\.?0+$/, '');
}

function enterpriseLabel(number: string, name: string | null): string {
  return name ? `${number} (${name})` : number;
}

export function balanceHeader(enterpriseNumber: string): string {
  return `🔍 Проверка баланса WebSMS для предприятия ${enterpriseNumber}...`;
}

/** Whether a balance is below an alert threshold: the SMS balance, since Viber money does not pay for SMS. */
export function isBelow(check: BalanceCheck, threshold: number | undefined): boolean {
  return threshold !== undefined && check.kind === 'ok' && check.sms < threshold;
}

/** The lines after the header: the documented balance block, or the documented error. */
export function formatBalanceCheck(check: BalanceCheck, threshold?: number): string[] {
  switch (check.kind) {
    case 'ok': {
      const lines = [
        '💰 БАЛАНС WEBSMS:',
        HEAVY_RULE,
        `🏢 Предприятие: ${enterpriseLabel(check.enterpriseNumber, check.enterpriseName)}`,
        `👤 Пользователь: ${check.websmsUser}`,
        LIGHT_RULE,
        `   📱 SMS: ${formatAmount(check.sms)} ${CURRENCY}`,
        `   💬 Viber: ${formatAmount(check.viber)} ${CURRENCY}`,
        `   💰 Общий доступный баланс: ${formatAmount(check.total)} ${CURRENCY}`,
        HEAVY_RULE,
      ];
      if (!check.active) lines.push('⚠️  Предприятие неактивно (enterprises.active = false): SMS от его имени не отправляются');
      if (threshold !== undefined && isBelow(check, threshold)) {
        lines.push(`⚠️  Баланс SMS ниже порога: ${formatAmount(check.sms)} < ${formatAmount(threshold)} ${CURRENCY}`);
      }
      return lines;
    }
    case 'not-configured':
      return [`❌ Предприятие ${check.enterpriseNumber} не найдено или не имеет WebSMS настроек`, '   Проверьте поле custom_domain в таблице enterprises'];
    case 'websms-error':
      return [
        `❌ ${websmsProblem(check.code)} для предприятия ${enterpriseLabel(check.enterpriseNumber, check.enterpriseName)}`,
        `   👤 Пользователь: ${check.websmsUser}`,
        `   Причина: ${check.message}`,
        `   ${websmsHint(check.code)}`,
      ];
  }
}

function websmsProblem(code: string): string {
  if (code === 'timeout') return 'WebSMS не ответил вовремя';
  if (code === 'unreachable') return 'WebSMS недоступен';
  return 'WebSMS вернул ошибку при запросе баланса';
}

function websmsHint(code: string): string {
  switch (code) {
    case 'websms_3':
    case 'websms_4':
      return 'Проверьте пользователя и API-ключ в поле custom_domain таблицы enterprises';
    case 'websms_5':
      return 'WebSMS не разрешает запросы с этого IP-адреса: проверьте настройки аккаунта WebSMS';
    case 'timeout':
    case 'unreachable':
      return 'Повторите проверку позже; проверьте сеть и WEBSMS_BASE_URL';
    default:
      return 'Повторите проверку позже; если ошибка повторяется, проверьте аккаунт в кабинете WebSMS';
  }
}

export interface BalanceSummary {
  checked: number;
  ok: number;
  failed: number;
  below: number;
}

export function summarise(checks: readonly BalanceCheck[], threshold?: number): BalanceSummary {
  return {
    checked: checks.length,
    ok: checks.filter((c) => c.kind === 'ok').length,
    failed: checks.filter((c) => c.kind !== 'ok').length,
    below: checks.filter((c) => isBelow(c, threshold)).length,
  };
}

export function formatSummary(summary: BalanceSummary, threshold?: number): string {
  const parts = [`проверено предприятий: ${summary.checked}`, `баланс получен: ${summary.ok}`, `ошибок: ${summary.failed}`];
  if (threshold !== undefined) parts.push(`ниже порога ${formatAmount(threshold)} ${CURRENCY}: ${summary.below}`);
  return `📊 Итого: ${parts.join(', ')}`;
}

/** The balance as `GET /enterprises/{number}/balance` answers it, and `--json` prints it. */
export function balanceFields(check: Extract<BalanceCheck, { kind: 'ok' }>) {
  return {
    enterprise_number: check.enterpriseNumber,
    enterprise_name: check.enterpriseName,
    websms_user: check.websmsUser,
    sms: check.sms,
    viber: check.viber,
    total: check.total,
    currency: CURRENCY,
  };
}

/** The machine-readable form: the same fields as `GET /enterprises/{number}/balance`, and more. */
export function balanceJson(check: BalanceCheck, threshold?: number): Record<string, unknown> {
  switch (check.kind) {
    case 'ok':
      return {
        ok: true,
        ...balanceFields(check),
        active: check.active,
        ...(threshold === undefined ? {} : { below_threshold: isBelow(check, threshold) }),
      };
    case 'not-configured':
      return { ok: false, enterprise_number: check.enterpriseNumber, error: { code: 'not_found', message: `Enterprise ${check.enterpriseNumber} not found or has no WebSMS configuration` } };
    case 'websms-error':
      return {
        ok: false,
        enterprise_number: check.enterpriseNumber,
        enterprise_name: check.enterpriseName,
        websms_user: check.websmsUser,
        error: { code: check.code, message: check.message },
      };
  }
}
