import type { Db } from '../db/database.ts';
import { findEvent, isHead, listEvents, reopenGivenUp, type CallbackEvent, type CallbackEventStatus } from './callback-repository.ts';

// Operators' view of callbacks (npm run jobs -- callbacks | retry-callback): what is pending or given
// up and why, and a retry of a given-up event. The event rows are the truth; Redis only holds jobs.

export const CALLBACK_STATES: readonly CallbackEventStatus[] = ['pending', 'given_up', 'delivered'];

export interface CallbackEventView {
  eventId: number;
  messageId: number;
  type: string;
  webhookId: string;
  status: CallbackEventStatus;
  attempts: number;
  /** scheme, host and path: the query may carry the receiver's token */
  target: string;
  createdAt: Date;
  nextAttemptAt: Date | null;
  lastAttemptAt: Date | null;
  lastError: string | null;
  lastHttpStatus: number | null;
  finishedAt: Date | null;
}

export function withoutQuery(url: string): string {
  try {
    const parsed = new URL(url);
    return `${parsed.protocol}//${parsed.host}${parsed.pathname}${parsed.search ? '?…' : ''}`;
  } catch {
    return '(invalid)';
  }
}

function view(event: CallbackEvent): CallbackEventView {
  return {
    eventId: event.id,
    messageId: event.messageId,
    type: event.type,
    webhookId: event.webhookId,
    status: event.status,
    attempts: event.attempts,
    target: withoutQuery(event.url),
    createdAt: event.createdAt,
    nextAttemptAt: event.status === 'pending' ? event.nextAttemptAt : null,
    lastAttemptAt: event.lastAttemptAt,
    lastError: event.lastError,
    lastHttpStatus: event.lastHttpStatus,
    finishedAt: event.finishedAt,
  };
}

/** Newest first; by default what needs attention: given up and pending events. */
export async function listCallbackEvents(
  db: Db,
  filter: { statuses?: readonly CallbackEventStatus[]; messageId?: number | undefined; limit: number },
): Promise<CallbackEventView[]> {
  const events = await listEvents(db, { statuses: filter.statuses ?? ['given_up', 'pending'], messageId: filter.messageId, limit: filter.limit });
  return events.map(view);
}

export type CallbackRetryResult =
  /** queued: due now as its message's head (a worker attempts it within a second); false: after its message's earlier pending event */
  | { kind: 'done'; eventId: number; messageId: number; queued: boolean; explanation: string }
  | { kind: 'nothing'; eventId: number; explanation: string }
  | { kind: 'refused'; eventId: number; reason: string }
  | { kind: 'not-found'; eventId: number };

/**
 * A given-up event becomes pending again with a fresh retry window, attempted at once (or, when an
 * earlier event of its message is still pending, right after it). Same webhook-id and body: a
 * receiver that did get it after all can drop it.
 */
export async function retryCallbackEvent(db: Db, eventId: number): Promise<CallbackRetryResult> {
  const event = await findEvent(db, eventId);
  if (!event) return { kind: 'not-found', eventId };
  if (event.status === 'delivered') return { kind: 'refused', eventId, reason: 'already delivered' };
  if (event.status === 'pending') {
    return { kind: 'nothing', eventId, explanation: `still pending: next attempt at ${event.nextAttemptAt.toISOString()}` };
  }
  if (!(await reopenGivenUp(db, eventId))) return { kind: 'refused', eventId, reason: 'its state changed meanwhile; look again and rerun' };
  // Due now: a worker's dispatcher claims it within a second, unless an earlier event of its message is pending.
  const head = await isHead(db, event.messageId, eventId);
  return {
    kind: 'done',
    eventId,
    messageId: event.messageId,
    queued: head,
    explanation: head ? 'pending again, attempted now, retried for a new window' : 'pending again, after the earlier pending event of its message',
  };
}
