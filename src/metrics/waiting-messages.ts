import type { Db } from '../db/database.ts';

/**
 * Messages accepted and not yet sent, per enterprise: its line, plus any waiting out a retry backoff.
 * Counted from the rows (the truth, which survive Redis losing the line) through the partial index
 * idx_user_sms_unfinished, which holds only unfinished rows: a scrape never reads the table's history.
 */
export async function countWaitingMessagesByEnterprise(db: Db): Promise<Array<{ enterprise: string; waiting: number }>> {
  const rows = await db
    .selectFrom('user_sms_send')
    .select(['enterprise_number', (eb) => eb.fn.countAll<string>().as('waiting')])
    .where('status', 'in', ['pending', 'queued'])
    .groupBy('enterprise_number')
    .orderBy('enterprise_number')
    .execute();
  return rows.map((row) => ({ enterprise: row.enterprise_number, waiting: Number(row.waiting) }));
}
