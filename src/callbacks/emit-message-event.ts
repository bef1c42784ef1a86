import { randomUUID } from 'node:crypto';
import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import type { MessageStatus } from '../db/database.ts';
import { findMessageSnapshot, forgetOwed, insertEvent, insertEvents, type CallbackEvent, type MessageSnapshot, type NewCallbackEvent, type OwedChange } from './callback-repository.ts';
import type { LocalDispatch } from './callback-dispatcher.ts';

// Raising an event for a message whose caller gave a callback_url: a row in PostgreSQL, due at once,
// which is all its delivery needs (the dispatchers claim due rows, a message's events in order:
// callback-dispatcher.ts). A worker that raises an event its own dispatcher has room for, and that is
// its message's head, raises it leased to itself and attempts it at once, with no claim.
// Messages without a callback_url cost one indexed read and raise nothing (none at all when the change
// that raises the event returned the message as it left it).

export const MESSAGE_EVENT_TYPES = ['message.sent', 'message.failed', 'message.unknown', 'message.delivered', 'message.undelivered'] as const;
export type MessageEventType = (typeof MESSAGE_EVENT_TYPES)[number];

export interface CallbackEmitPorts {
  db: Db;
  logger: Logger;
  /** This process's dispatcher: attempts the events raised here at once (absent: a worker's claims them). */
  dispatch?: LocalDispatch;
}

export type EmitResult =
  | { kind: 'no-callback' }
  /** this change of this message was raised before (a re-run of the same outcome) */
  | { kind: 'already-raised' }
  | { kind: 'recorded'; eventId: number };

/** The body every receiver gets: no phone, no text, no key. */
export interface MessageEventBody {
  type: MessageEventType;
  timestamp: string;
  data: {
    id: number;
    enterprise_number: string;
    status: string;
    delivery_status: string | null;
    message_id: number | null;
    custom_id: string | null;
    price: number | null;
    parts: number | null;
    amount: number | null;
    error: string | null;
    sent_at: string | null;
    delivered_at: string | null;
  };
}

export function eventBody(type: MessageEventType, message: MessageSnapshot, at: Date): MessageEventBody {
  return {
    type,
    timestamp: at.toISOString(),
    data: {
      id: message.id,
      enterprise_number: message.enterpriseNumber,
      status: message.status,
      delivery_status: message.deliveryStatus,
      message_id: message.websmsMessageId,
      custom_id: message.customId,
      price: message.price,
      parts: message.parts,
      amount: message.amount,
      error: message.error,
      sent_at: message.sentAt?.toISOString() ?? null,
      delivered_at: message.deliveredAt?.toISOString() ?? null,
    },
  };
}

/**
 * Records `type` for message `messageId`, due for delivery at once. The event describes `changed`, the
 * message as the change that raised the event left it (from that statement's RETURNING; null: it has
 * no callback_url), or else the row as it stands now. Idempotent: raising the same change twice (a
 * job that runs again) records one event. Throws only when PostgreSQL cannot record it, so the
 * caller's job is retried and the event is not lost.
 */
export async function emitMessageEvent(ports: CallbackEmitPorts, messageId: number, type: MessageEventType, changed?: MessageSnapshot | null): Promise<EmitResult> {
  const message = changed === undefined ? await findMessageSnapshot(ports.db, messageId) : changed;
  if (!message) return { kind: 'no-callback' };
  const at = new Date();
  const event = newEvent(type, message, at);
  const [inserted] = await raise(ports, [event], async ([claimForMs]) => {
    const row = await insertEvent(ports.db, event, { claimForMs });
    return row ? [{ ...row, messageId: event.messageId }] : [];
  });
  if (inserted === undefined) return { kind: 'already-raised' };
  ports.logger.debug({ messageId, eventId: inserted.id, type }, 'callback event raised');
  return { kind: 'recorded', eventId: inserted.id };
}

/** The row an event is recorded as: its body fixed now, a webhook-id of its own for every attempt. */
function newEvent(type: MessageEventType, message: MessageSnapshot, at: Date): NewCallbackEvent {
  return {
    messageId: message.id,
    type,
    revision: message.revision,
    webhookId: `msg_${randomUUID().replaceAll('-', '')}`,
    url: message.callbackUrl,
    body: JSON.stringify(eventBody(type, message, at)),
    createdAt: at,
  };
}

/**
 * emitMessageEvent for several messages at once, each described by the change that raised it (a
 * delivery poll round's final statuses: one statement for the round). At
 * most one event per message. Returns how many were recorded; throws only when PostgreSQL cannot
 * record them.
 */
export async function emitMessageEvents(ports: CallbackEmitPorts, changes: ReadonlyArray<{ type: MessageEventType; message: MessageSnapshot }>): Promise<number> {
  if (changes.length === 0) return 0;
  const at = new Date();
  const events = changes.map(({ type, message }) => newEvent(type, message, at));
  const inserted = await raise(ports, events, (leasesMs) => insertEvents(ports.db, events, { claimsForMs: leasesMs }));
  ports.logger.debug({ recorded: inserted.length }, 'callback events raised');
  return inserted.length;
}

/**
 * Inserts events (`insert`), leased to this process's dispatcher for as many as it has room for (each
 * for the lease reserve() names); those leased are handed to it, the others are left due (and the
 * dispatcher woken to look for them).
 */
async function raise(
  ports: CallbackEmitPorts,
  events: readonly NewCallbackEvent[],
  insert: (leasesMs: readonly number[]) => Promise<Array<{ id: number; messageId: number; claimed: boolean }>>,
): Promise<Array<{ id: number; messageId: number; claimed: boolean }>> {
  const dispatch = ports.dispatch;
  const leases = dispatch?.reserve(events.length) ?? [];
  let inserted: Array<{ id: number; messageId: number; claimed: boolean }>;
  try {
    inserted = await insert(leases);
  } catch (error) {
    dispatch?.release(leases);
    throw error;
  }
  if (!dispatch) return inserted;
  const byMessage = new Map(events.map((e, position) => [e.messageId, { event: e, position, leaseMs: leases[position] }]));
  const unused = new Set(leases.keys());
  for (const row of inserted) {
    const raised = byMessage.get(row.messageId);
    if (!row.claimed || raised?.leaseMs === undefined) continue;
    dispatch.adopt(claimedEvent(row.id, raised.event), raised.leaseMs);
    unused.delete(raised.position);
  }
  dispatch.release([...unused].map((position) => leases[position]!));
  if (inserted.length > leases.length - unused.size) dispatch.wake();
  return inserted;
}

/** A just-raised event as a claim would have returned it. */
function claimedEvent(id: number, event: NewCallbackEvent): CallbackEvent {
  return {
    id,
    messageId: event.messageId,
    type: event.type,
    webhookId: event.webhookId,
    url: event.url,
    body: event.body,
    status: 'pending',
    attempts: 0,
    createdAt: event.createdAt,
    windowStartAt: event.createdAt,
    nextAttemptAt: event.createdAt,
    lastAttemptAt: null,
    lastError: null,
    lastHttpStatus: null,
    finishedAt: null,
  };
}

/**
 * Raises the events that message changes left owed (callback_owed), found with their messages as they
 * stand now (the owed-event raiser calls this for each batch it finds). A message's events are raised in
 * the order they were owed, one per message and statement. A marker is stale when its message has
 * changed again since (its later change is owed in its own right) or is gone: it is forgotten.
 */
export async function raiseOwedEvents(ports: CallbackEmitPorts, owed: readonly OwedChange[]): Promise<{ raised: number; stale: number }> {
  const stale: OwedChange[] = [];
  let rest: Array<{ type: MessageEventType; message: MessageSnapshot }> = [];
  for (const change of owed) {
    const type = MESSAGE_EVENT_TYPES.find((known) => known === change.type);
    if (!change.message || !type || change.message.revision !== change.revision) stale.push(change);
    else rest.push({ type, message: change.message });
  }
  await forgetOwed(ports.db, stale);
  let raised = 0;
  while (rest.length > 0) {
    const seen = new Set<number>();
    const now = rest.filter((c) => !seen.has(c.message.id) && seen.add(c.message.id));
    const taken = new Set(now);
    rest = rest.filter((c) => !taken.has(c));
    raised += await emitMessageEvents(ports, now);
  }
  return { raised, stale: stale.length };
}

/** The event a final send outcome raises (the send worker calls this once the outcome is recorded). */
export function sendOutcomeEvent(status: MessageStatus): MessageEventType | undefined {
  switch (status) {
    case 'success':
      return 'message.sent';
    case 'failed':
      return 'message.failed';
    case 'unknown':
      return 'message.unknown';
    default:
      return undefined;
  }
}

/** Raises the event of a message's final send status (cancel, drop …); nothing for other statuses. */
export async function emitOutcomeEvent(ports: CallbackEmitPorts, messageId: number, status: MessageStatus): Promise<void> {
  const type = sendOutcomeEvent(status);
  if (type) await emitMessageEvent(ports, messageId, type);
}
