import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import { isFinal } from '../messages/message.ts';
import { findSendingState } from '../messages/repository.ts';
import type { EnterpriseLine, Wake } from './enterprise-line.ts';
import { findWaitingMessageIds } from './line-repository.ts';

// Taking and ending a turn in an enterprise's line, for one delivery run. Plain values in and out;
// the queue adapter supplies `wake` (run a message's job at its slot) and `enqueue`.

export interface LinePorts {
  db: Db;
  logger: Logger;
  line: EnterpriseLine;
  /**
   * Makes the message's job run in `inMs` (now if ≤ 0). Resolves 'missing' when the message has no job,
   * 'not-waiting' when the job is not delayed (already due, running, or finished). Never a send by itself:
   * the job still takes its turn.
   */
  wake(messageId: number, inMs: number): Promise<'woken' | 'not-waiting' | 'missing'>;
  /** Gives a message its job (and its place in the line); idempotent. */
  enqueue(messageId: number, enterpriseNumber: string): Promise<unknown>;
  /**
   * How long after its expected slot a waiting job comes to look by itself, should the wake from the
   * send before it never come (that worker died between its send and the wake). One window: rare, and
   * bounded.
   */
  backstopMs: number;
}

export type TurnDecision =
  | { kind: 'go' }
  /** come back after delayMs; `etaMs` is the message's expected send time (Redis clock) */
  | { kind: 'wait'; delayMs: number; etaMs: number; reason: string }
  /** the message is not waiting any more (finished, cancelled, or being sent): read its row */
  | { kind: 'not-waiting' };

/** A grant no replica acknowledged is tried again after this: replication is back within a second or two, or an operator must act. */
const UNREPLICATED_RETRY_MS = 1_000;

/** A head free to go for this long without taking its turn is looked after by whoever finds it. */
const HEAD_OVERDUE_MS = 2_000;

export async function takeTurn(ports: LinePorts, enterprise: string, messageId: number, token: string): Promise<TurnDecision> {
  let rebuilt = false;
  // A few rounds at most: each round either decides, or repairs something (a rebuilt line, a dead head) once.
  for (let round = 0; round < 4; round += 1) {
    const taken = await ports.line.take(enterprise, messageId, token);
    switch (taken.kind) {
      case 'granted':
        if (!taken.replicated) {
          // Recorded on the master only: a failover now could lose it and let the window be exceeded.
          // Fail closed: the grant stays counted, the message comes back and takes another.
          ports.logger.warn({ enterprise, messageId }, 'grant not acknowledged by a replica; the send waits');
          return { kind: 'wait', delayMs: UNREPLICATED_RETRY_MS, etaMs: Date.now() + UNREPLICATED_RETRY_MS, reason: 'grant not acknowledged by a replica' };
        }
        return { kind: 'go' };
      case 'wait':
        return { kind: 'wait', delayMs: Math.max(0, taken.slotInMs), etaMs: taken.etaMs, reason: 'rate limit' };
      case 'busy':
        return { kind: 'wait', delayMs: Math.max(0, taken.slotInMs) + ports.backstopMs, etaMs: taken.etaMs, reason: 'another message of the enterprise is being sent' };
      case 'behind':
        if ((taken.headOverdueMs === null || taken.headOverdueMs > HEAD_OVERDUE_MS) && (await lookAfterHead(ports, enterprise, taken.head)) === 'removed') continue;
        return { kind: 'wait', delayMs: Math.max(0, taken.slotInMs) + ports.backstopMs, etaMs: taken.etaMs, reason: `waiting in line (position ${taken.position})` };
      case 'absent': {
        if (rebuilt) return { kind: 'not-waiting' };
        rebuilt = true;
        // A retry coming back, or a line Redis lost: the rows say who waits, in which order.
        const ids = await findWaitingMessageIds(ports.db, enterprise, messageId);
        if (!ids.includes(messageId)) return { kind: 'not-waiting' };
        const head = await ports.line.rebuild(enterprise, ids);
        if (head && head.messageId !== messageId) await wakeQuietly(ports, head);
        continue;
      }
    }
  }
  return { kind: 'wait', delayMs: ports.backstopMs, etaMs: Date.now() + ports.backstopMs, reason: 'line changing' };
}

/** The message's call to WebSMS is over (whatever it answered): the next head may go at its slot. */
export async function endTurn(ports: LinePorts, enterprise: string, messageId: number): Promise<void> {
  const next = await ports.line.finish(enterprise, messageId);
  if (next) await wakeQuietly(ports, next);
}

/** The message had its turn but made no call (its row was closed meanwhile), or no longer waits: out of the line. */
export async function leaveLine(ports: Pick<LinePorts, 'line' | 'wake' | 'logger'>, enterprise: string, messageId: number): Promise<void> {
  const next = await ports.line.leave(enterprise, messageId);
  if (next) await wakeQuietly(ports, next);
}

/**
 * A head that should have gone and has not: its row may be finished (cancelled or dropped without
 * leaving the line, or closed while Redis was away), or it may have no job (lost with Redis). Finished:
 * it leaves the line. Waiting: its job is made to run now (it takes its turn, or waits for its slot),
 * and a head without a job gets one. Sending: its own job ends the turn.
 */
async function lookAfterHead(ports: LinePorts, enterprise: string, head: number): Promise<'removed' | 'kept'> {
  const state = await findSendingState(ports.db, head);
  if (!state || isFinal(state.status)) {
    ports.logger.warn({ enterprise, messageId: head, status: state?.status ?? null }, 'line head is no longer waiting; taking it out of the line');
    await leaveLine(ports, enterprise, head);
    return 'removed';
  }
  if (state.status === 'sending') return 'kept';
  const woken = await ports.wake(head, 0);
  if (woken === 'missing') {
    ports.logger.warn({ enterprise, messageId: head }, 'line head has no job; giving it one');
    await ports.enqueue(head, enterprise);
  }
  return 'kept';
}

/** A wake that cannot be done is covered by the backstop; it must never fail the send that ended. */
async function wakeQuietly(ports: Pick<LinePorts, 'wake' | 'logger'>, next: Wake): Promise<void> {
  try {
    await ports.wake(next.messageId, next.inMs);
  } catch (error) {
    ports.logger.warn({ messageId: next.messageId, err: error instanceof Error ? error.message : String(error) }, 'could not wake the next message in line; it will wake by itself');
  }
}

/**
 * Before a lost job is given back (the sweeper, after Redis lost its data): a line Redis lost is
 * rebuilt from the rows first, so its messages go in id order whatever order their jobs come back in.
 */
export async function restoreLine(ports: LinePorts, enterprise: string, messageId: number): Promise<void> {
  if ((await ports.line.standing(enterprise, messageId)).kind !== 'absent') return;
  const ids = await findWaitingMessageIds(ports.db, enterprise, messageId);
  const head = await ports.line.rebuild(enterprise, ids);
  if (head && head.messageId !== messageId) await wakeQuietly(ports, head);
}
