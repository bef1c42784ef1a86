import type pg from 'pg';
import type { SandboxCallRecord } from './stack.ts';

// Correctness, checked on every run from the two records that matter: the message table (every
// accepted message reached a final state) and the WebSMS sandbox's own log of calls (at most one
// send per provider reference; no enterprise over its limit in any rolling window, as WebSMS saw it).

export interface CheckResult {
  name: string;
  passed: boolean;
  detail: string;
}

export interface StatusCounts {
  byStatus: Record<string, number>;
  total: number;
  unfinished: number;
}

export async function statusCounts(sql: pg.Client): Promise<StatusCounts> {
  const { rows } = await sql.query<{ status: string; count: string }>('SELECT status, count(*) AS count FROM user_sms_send GROUP BY status');
  const byStatus: Record<string, number> = {};
  for (const row of rows) byStatus[row.status] = Number(row.count);
  const total = Object.values(byStatus).reduce((a, b) => a + b, 0);
  const unfinished = (byStatus.pending ?? 0) + (byStatus.queued ?? 0) + (byStatus.sending ?? 0);
  return { byStatus, total, unfinished };
}

/** Polls until no message is pending, queued or sending, or the deadline passes. */
export async function waitForFinalStates(sql: pg.Client, timeoutMs: number): Promise<StatusCounts> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const counts = await statusCounts(sql);
    if (counts.unfinished === 0 || Date.now() > deadline) return counts;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/**
 * The sandbox's send calls for the service's accounts, kept across sandbox resets (the sandbox is
 * reset between runs to keep its memory flat, and only when no message is in flight).
 */
export class SendLedger {
  /** provider reference (custom_id) → arrival times of every send/sms call carrying it */
  private readonly byRef = new Map<string, number[]>();
  private readonly accepted = new Map<string, number>();
  sends = 0;
  withoutRef = 0;

  add(calls: SandboxCallRecord[], users: ReadonlySet<string>): void {
    for (const call of calls) {
      if (call.endpoint !== 'send/sms' || call.user === null || !users.has(call.user)) continue;
      this.sends += 1;
      if (call.customId === null) {
        this.withoutRef += 1;
        continue;
      }
      const times = this.byRef.get(call.customId);
      if (times) times.push(call.at);
      else this.byRef.set(call.customId, [call.at]);
      if (call.messageId !== undefined) this.accepted.set(call.customId, (this.accepted.get(call.customId) ?? 0) + 1);
    }
  }

  duplicates(): Array<{ ref: string; calls: number }> {
    return [...this.byRef].filter(([, times]) => times.length > 1).map(([ref, times]) => ({ ref, calls: times.length }));
  }

  timesOf(ref: string): number[] | undefined {
    return this.byRef.get(ref);
  }

  acceptedCount(): number {
    let total = 0;
    for (const n of this.accepted.values()) total += n;
    return total;
  }
}

/**
 * Windows over the limit: for one enterprise's send times sorted ascending, every i with
 * t[i + limit] − t[i] < window is a window [t[i], t[i] + window) holding limit + 1 sends.
 */
export function windowViolations(times: number[], limit: number, windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let violations = 0;
  for (let i = 0; i + limit < sorted.length; i += 1) {
    if (sorted[i + limit]! - sorted[i]! < windowMs) violations += 1;
  }
  return violations;
}

/** Every enterprise's sends as WebSMS received them, checked against the limit that applied to it. */
export async function limitViolations(
  sql: pg.Client,
  ledger: SendLedger,
  limitFor: (enterpriseNumber: string) => { limit: number; windowMs: number },
): Promise<{ enterprises: number; sends: number; violations: number; worst: Array<{ enterprise: string; violations: number }> }> {
  const { rows } = await sql.query<{ enterprise_number: string; provider_ref: string }>(
    'SELECT enterprise_number, provider_ref FROM user_sms_send WHERE provider_ref IS NOT NULL',
  );
  const byEnterprise = new Map<string, number[]>();
  for (const row of rows) {
    const times = ledger.timesOf(row.provider_ref);
    if (!times) continue;
    const list = byEnterprise.get(row.enterprise_number);
    if (list) list.push(...times);
    else byEnterprise.set(row.enterprise_number, [...times]);
  }
  let violations = 0;
  let sends = 0;
  const worst: Array<{ enterprise: string; violations: number }> = [];
  for (const [enterprise, times] of byEnterprise) {
    sends += times.length;
    const { limit, windowMs } = limitFor(enterprise);
    const v = windowViolations(times, limit, windowMs);
    if (v > 0) {
      violations += v;
      worst.push({ enterprise, violations: v });
    }
  }
  worst.sort((a, b) => b.violations - a.violations);
  return { enterprises: byEnterprise.size, sends, violations, worst: worst.slice(0, 10) };
}

/** Success rows against the sandbox: each must have exactly one accepted call with its reference. */
export async function successMatchesSandbox(sql: pg.Client, ledger: SendLedger): Promise<{ successRows: number; acceptedCalls: number; missing: number }> {
  const { rows } = await sql.query<{ provider_ref: string }>("SELECT provider_ref FROM user_sms_send WHERE status = 'success'");
  let missing = 0;
  for (const row of rows) if (!ledger.timesOf(row.provider_ref)) missing += 1;
  return { successRows: rows.length, acceptedCalls: ledger.acceptedCount(), missing };
}
