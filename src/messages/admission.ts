import type { Db } from '../db/database.ts';
import type { ServerClock } from '../db/server-clock.ts';
import { lockEnterpriseAdmissions } from './daily-cap.ts';
import { countAcceptedToday, findKeyHolder, insertPendingMessageBy, releaseReusableKey, type NewMessage } from './repository.ts';

// Admission: the one place a message row that will be sent is created, under the caller's
// Idempotency-Key and the enterprise's daily cap. PostgreSQL decides both:
// - the key: the unique index (enterprise_number, idempotency_key). Racing requests all try the insert;
//   ON CONFLICT DO NOTHING lets exactly one win, the others read the winner and repeat its answer.
// - the cap: counted and inserted under a per-enterprise transaction lock (daily-cap.ts), so it is exact.
// - the deadline: the row is stored only if PostgreSQL receives the insert within `arrival.ms` of its
//   sending, by PostgreSQL's own clock (the enterprise's read carried forward: server-clock.ts).
//   The API gives up on a statement ANSWER_GRACE_MS after PostgreSQL's statement_timeout would have
//   ended it, and answers 503 "nothing was sent". An insert held up in the network past that moment
//   would otherwise commit when the network came back, and the sweeper would send the message: the
//   caller's retry would send it twice. One that arrives by the deadline (well within the grace)
//   commits, or is cancelled by statement_timeout, before the API gives up.

export interface AdmissionRules {
  idempotency?: { key: string; requestHash: string; retentionS: number } | undefined;
  /** messages per enterprise per day; undefined or 0: no cap */
  dailyCap?: number | undefined;
}

/** The insert must reach PostgreSQL within `ms` of being sent, by PostgreSQL's clock. */
export interface Arrival {
  clock: ServerClock;
  ms: number;
}

export type Admission =
  | { kind: 'admitted'; id: number }
  /** the key is held by message `id` within the retention window: no new message */
  | { kind: 'repeat'; id: number; sameRequest: boolean }
  | { kind: 'over-daily-cap'; cap: number; secondsLeft: number }
  /** PostgreSQL received the insert after the deadline: nothing was stored */
  | { kind: 'late' };

/**
 * Each round either decides or loses an insert race; the loser's next round finds the winner. A third
 * round could only be needed if the winner's key were released in between, which takes the whole
 * retention window: three rounds are plenty, and more would hide a bug.
 */
const ROUNDS = 3;

export async function admitMessage(db: Db, message: NewMessage, rules: AdmissionRules, arrival: Arrival): Promise<Admission> {
  for (let round = 1; round <= ROUNDS; round += 1) {
    const cap = rules.dailyCap;
    const decided = cap
      ? await db.transaction().execute(async (trx) => {
          await lockEnterpriseAdmissions(trx, message.enterpriseNumber);
          return admitOnce(trx, message, rules, cap, arrival);
        })
      : await admitOnce(db, message, rules, undefined, arrival);
    if (decided) return decided;
  }
  throw new Error(`admission of a message for ${message.enterpriseNumber} lost ${ROUNDS} idempotency-key races in a row`);
}

/** undefined: another request took the key between our look-up and our insert; go round again. */
async function admitOnce(db: Db, message: NewMessage, rules: AdmissionRules, cap: number | undefined, arrival: Arrival): Promise<Admission | undefined> {
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
  const inserted = await insertPendingMessageBy(db, message, arrival, idempotency);
  if (inserted.kind === 'key-taken') return undefined;
  return inserted.kind === 'late' ? inserted : { kind: 'admitted', id: inserted.id };
}
