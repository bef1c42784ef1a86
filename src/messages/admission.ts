import type { Db } from '../db/database.ts';
import { lockEnterpriseAdmissions } from './daily-cap.ts';
import { countAcceptedToday, findKeyHolder, insertPendingMessage, insertPendingMessageOnce, releaseReusableKey, type NewMessage } from './repository.ts';

// Admission: the one place a message row that will be sent is created, under the caller's
// Idempotency-Key and the enterprise's daily cap. PostgreSQL decides both:
// - the key: the unique index (enterprise_number, idempotency_key). Racing requests all try the insert;
//   ON CONFLICT DO NOTHING lets exactly one win, the others read the winner and repeat its answer.
// - the cap: counted and inserted under a per-enterprise transaction lock (daily-cap.ts), so it is exact.

export interface AdmissionRules {
  idempotency?: { key: string; requestHash: string; retentionS: number } | undefined;
  /** messages per enterprise per day; undefined or 0: no cap */
  dailyCap?: number | undefined;
}

export type Admission =
  | { kind: 'admitted'; id: number }
  /** the key is held by message `id` within the retention window: no new message */
  | { kind: 'repeat'; id: number; sameRequest: boolean }
  | { kind: 'over-daily-cap'; cap: number; secondsLeft: number };

/**
 * Each round either decides or loses an insert race; the loser's next round finds the winner. A third
 * round could only be needed if the winner's key were released in between, which takes the whole
 * retention window: three rounds are plenty, and more would hide a bug.
 */
const ROUNDS = 3;

export async function admitMessage(db: Db, message: NewMessage, rules: AdmissionRules): Promise<Admission> {
  for (let round = 1; round <= ROUNDS; round += 1) {
    const cap = rules.dailyCap;
    const decided = cap
      ? await db.transaction().execute(async (trx) => {
          await lockEnterpriseAdmissions(trx, message.enterpriseNumber);
          return admitOnce(trx, message, rules, cap);
        })
      : await admitOnce(db, message, rules, undefined);
    if (decided) return decided;
  }
  throw new Error(`admission of a message for ${message.enterpriseNumber} lost ${ROUNDS} idempotency-key races in a row`);
}

/** undefined: another request took the key between our look-up and our insert; go round again. */
async function admitOnce(db: Db, message: NewMessage, rules: AdmissionRules, cap: number | undefined): Promise<Admission | undefined> {
  const { idempotency } = rules;
  if (idempotency) {
    const holder = await findKeyHolder(db, message.enterpriseNumber, idempotency.key, idempotency.retentionS);
    if (holder && !holder.reusable) return { kind: 'repeat', id: holder.id, sameRequest: holder.requestHash === idempotency.requestHash };
    if (holder) await releaseReusableKey(db, holder.id, idempotency.key, idempotency.retentionS);
  }
  // After the key check: a repeat of a message already admitted is never refused by the cap.
  if (cap) {
    const day = await countAcceptedToday(db, message.enterpriseNumber, cap);
    if (day.accepted >= cap) return { kind: 'over-daily-cap', cap, secondsLeft: day.secondsLeft };
  }
  if (!idempotency) return { kind: 'admitted', id: await insertPendingMessage(db, message) };
  const id = await insertPendingMessageOnce(db, message, idempotency.key, idempotency.requestHash);
  return id === undefined ? undefined : { kind: 'admitted', id };
}
