import { sql } from 'kysely';
import type { Db } from '../db/database.ts';

// The daily cap (DAILY_CAP_PER_ENTERPRISE): at most N messages accepted per enterprise per server-local
// calendar day, the day the table's own `created_at` uses, so reports and the cap agree on "today".
//
// Exact, not approximate: admission takes a per-enterprise advisory lock for the length of one short
// transaction (count, then insert), so two API processes can never both see "one slot left". The lock
// serialises only the admissions of one enterprise, which sends 3 SMS a minute anyway.

// Arbitrary, fixed; the two-key form cannot meet the migration lock (one bigint key space).
const DAILY_CAP_LOCK_CLASS = 8_014_002;

/** Held until the transaction ends. Enterprises whose numbers hash alike merely share a queue. */
export async function lockEnterpriseAdmissions(trx: Db, enterpriseNumber: string): Promise<void> {
  await sql`SELECT pg_advisory_xact_lock(${DAILY_CAP_LOCK_CLASS}, hashtext(${enterpriseNumber}))`.execute(trx);
}

export function dailyCapMessage(enterpriseNumber: string, cap: number, retryAt: Date): string {
  return `Daily limit reached: enterprise ${enterpriseNumber} may send at most ${cap} messages per day; not sent, retry after ${retryAt.toISOString()}`;
}
