import type { MessageRecord } from '../messages/message.ts';
import { isFinal } from '../messages/message.ts';
import type { EnterpriseLine } from './enterprise-line.ts';

/** Where a message stands, for its caller: `GET /messages/{id}` and the 202 of `POST /send`. */
export interface MessageStanding {
  /**
   * Messages of its enterprise that go before it: 0 = it goes next (or is being sent now). null: it is
   * in no line — finished, or waiting to retry a failed attempt (it rejoins when its retry comes).
   */
  position: number | null;
  /** When WebSMS is expected to receive it; null once it is finished. */
  expectedSendAt: Date | null;
}

/**
 * Computed from the line as it is now, so it improves by itself when a message ahead is cancelled or
 * a send ends early. Should Redis not answer, the row's own `not_before` (or now) stands in: a status
 * read must not fail because the line cannot be seen.
 */
export async function messageStanding(line: EnterpriseLine, record: Pick<MessageRecord, 'id' | 'enterpriseNumber' | 'status' | 'notBefore'>): Promise<MessageStanding> {
  if (isFinal(record.status)) return { position: null, expectedSendAt: null };
  const now = Date.now();
  const fallback = { position: null, expectedSendAt: new Date(Math.max(now, record.notBefore?.getTime() ?? now)) };
  try {
    const standing = await line.standing(record.enterpriseNumber, record.id);
    if (standing.kind === 'waiting') return { position: standing.position, expectedSendAt: new Date(Math.max(now, standing.etaMs)) };
    if (standing.kind === 'sending') return { position: 0, expectedSendAt: new Date(now) };
    return fallback;
  } catch {
    return fallback;
  }
}
