import type { Db } from '../db/database.ts';

// The rows behind a line. Redis holds the line; the rows say who is really waiting, so a line Redis
// lost (restart, expiry) is rebuilt from here.

/** A line longer than this is rebuilt in this many messages at a time: the rest join as their jobs run. */
const REBUILD_LIMIT = 10_000;

/**
 * Messages of one enterprise waiting for their first attempt, by id, plus `alsoId` if it is waiting
 * at all. Messages that already made an attempt are left out: they are waiting out a retry backoff
 * and join again by themselves when it ends (a retry may go later). Served by idx_user_sms_unfinished.
 */
export async function findWaitingMessageIds(db: Db, enterpriseNumber: string, alsoId: number): Promise<number[]> {
  const rows = await db
    .selectFrom('user_sms_send')
    .select('id')
    .where('status', 'in', ['pending', 'queued'])
    .where('enterprise_number', '=', enterpriseNumber)
    .where((eb) => eb.or([eb('attempts', '=', 0), eb('id', '=', String(alsoId))]))
    .orderBy('id')
    .limit(REBUILD_LIMIT)
    .execute();
  return rows.map((row) => Number(row.id));
}
