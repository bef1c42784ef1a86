import { setTimeout as sleep } from 'node:timers/promises';
import { endLostStatement, isServerError, settledAfterMs, type Db } from '../db/database.ts';
import type { ServerClock } from '../db/server-clock.ts';
import { lockEnterpriseAdmissions } from './daily-cap.ts';
import {
  countAcceptedToday,
  findIdByProviderRef,
  findKeyHolder,
  insertPendingMessageBy,
  newProviderRef,
  releaseReusableKey,
  type NewMessage,
  type PendingWrite,
} from './repository.ts';

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
// - a lost answer: the insert (or the COMMIT of its transaction) went out and no answer came back (the
//   connection was reset, or pg gave up waiting). It may have committed. Once it can no longer be
//   running (at once after pg's own timeout; after a reset, once the server process that ran it is
//   ended, or settledAfterMs after it was sent when that cannot be done), the row is looked up by
//   its provider_ref, chosen before the insert: found, the message is admitted like any other; not
//   found, nothing was stored and the caller's 503 "nothing was sent" is true. Only when PostgreSQL
//   cannot be asked even then is the outcome left unknown, and the caller is told so.

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
  /** `afterLostAnswer`: the insert's answer was lost, and the row was found afterwards */
  | { kind: 'admitted'; id: number; afterLostAnswer?: boolean }
  /** the key is held by message `id` within the retention window: no new message */
  | { kind: 'repeat'; id: number; sameRequest: boolean }
  | { kind: 'over-daily-cap'; cap: number; secondsLeft: number }
  /** PostgreSQL received the insert after the deadline: nothing was stored */
  | { kind: 'late' }
  /** the insert's answer was lost, and PostgreSQL could not be asked afterwards whether it was stored */
  | { kind: 'unknown'; lost: unknown; lookUp: unknown };

/**
 * Each round either decides or loses an insert race; the loser's next round finds the winner. A third
 * round could only be needed if the winner's key were released in between, which takes the whole
 * retention window: three rounds are plenty, and more would hide a bug.
 */
const ROUNDS = 3;

export async function admitMessage(db: Db, message: NewMessage, rules: AdmissionRules, arrival: Arrival): Promise<Admission> {
  const write: PendingWrite = { providerRef: newProviderRef() };
  try {
    return await admitInRounds(db, message, rules, arrival, write);
  } catch (error) {
    // PostgreSQL's own refusal, or no write whose answer is missing: nothing was stored.
    if (write.sentAtMs === undefined || isServerError(error)) throw error;
    return settleLostAnswer(db, write.providerRef, write.sentAtMs, error);
  }
}

async function admitInRounds(db: Db, message: NewMessage, rules: AdmissionRules, arrival: Arrival, write: PendingWrite): Promise<Admission> {
  for (let round = 1; round <= ROUNDS; round += 1) {
    const cap = rules.dailyCap;
    const decided = cap
      ? await db.transaction().execute(async (trx) => {
          await lockEnterpriseAdmissions(trx, message.enterpriseNumber);
          const admission = await admitOnce(trx, message, rules, cap, arrival, write);
          // The row is stored by the COMMIT, which goes out now: its answer is the one that may be lost.
          if (admission?.kind === 'admitted') write.sentAtMs = performance.now();
          return admission;
        })
      : await admitOnce(db, message, rules, undefined, arrival, write);
    if (decided) return decided;
  }
  throw new Error(`admission of a message for ${message.enterpriseNumber} lost ${ROUNDS} idempotency-key races in a row`);
}

/** Whether the write whose answer was lost stored the row, asked once it can no longer be running. */
async function settleLostAnswer(db: Db, providerRef: string, sentAtMs: number, lost: unknown): Promise<Admission> {
  if (!(await endLostStatement(db, lost, performance.now() - sentAtMs))) {
    const waitMs = sentAtMs + settledAfterMs(db) - performance.now();
    if (waitMs > 0) await sleep(waitMs);
  }
  let id: number | undefined;
  try {
    id = await findIdByProviderRef(db, providerRef);
  } catch (error) {
    return { kind: 'unknown', lost, lookUp: error };
  }
  if (id === undefined) throw lost;
  return { kind: 'admitted', id, afterLostAnswer: true };
}

/** undefined: another request took the key between our look-up and our insert; go round again. */
async function admitOnce(db: Db, message: NewMessage, rules: AdmissionRules, cap: number | undefined, arrival: Arrival, write: PendingWrite): Promise<Admission | undefined> {
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
  const inserted = await insertPendingMessageBy(db, message, arrival, write, idempotency);
  if (inserted.kind === 'key-taken') return undefined;
  return inserted.kind === 'late' ? inserted : { kind: 'admitted', id: inserted.id };
}
