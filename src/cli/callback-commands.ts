import type { Deps } from '../deps.ts';
import { CALLBACK_STATES, listCallbackEvents, retryCallbackEvent, type CallbackEventView, type CallbackRetryResult } from '../callbacks/callback-inspection.ts';
import type { CallbackEventStatus } from '../callbacks/callback-repository.ts';
import { EXIT, UsageError } from './args.ts';
import { formatLocalTime, formatTable } from './table.ts';

// `npm run jobs -- callbacks` and `npm run jobs -- retry-callback <event_id>` (composed in jobs.ts).

export const CALLBACK_USAGE = `       npm run jobs -- callbacks [--state <state>[,<state>...]] [--message <message_id>] [--limit <n>] [--json]
       npm run jobs -- retry-callback <event_id> [--json]

  callbacks       callback events by state: ${CALLBACK_STATES.join(', ')}. Without --state: given_up and pending.
  retry-callback  a given-up event is attempted again now, with the same webhook-id, for a new retry window.`;

export function parseCallbackStates(raw: string[] | undefined): CallbackEventStatus[] | undefined {
  if (raw === undefined) return undefined;
  const states = raw.flatMap((value) => value.split(',')).map((s) => s.trim());
  for (const state of states) {
    if (!(CALLBACK_STATES as readonly string[]).includes(state)) throw new UsageError(`--state must be one of ${CALLBACK_STATES.join(', ')} (got "${state}")`);
  }
  return [...new Set(states)] as CallbackEventStatus[];
}

function eventJson(event: CallbackEventView): Record<string, unknown> {
  return {
    event_id: event.eventId,
    message_id: event.messageId,
    type: event.type,
    webhook_id: event.webhookId,
    state: event.status,
    attempts: event.attempts,
    target: event.target,
    created_at: event.createdAt.toISOString(),
    next_attempt_at: event.nextAttemptAt?.toISOString() ?? null,
    last_attempt_at: event.lastAttemptAt?.toISOString() ?? null,
    last_http_status: event.lastHttpStatus,
    last_error: event.lastError,
    finished_at: event.finishedAt?.toISOString() ?? null,
  };
}

const COLUMNS = [
  { key: 'event', align: 'right' },
  { key: 'message', align: 'right' },
  { key: 'type', align: 'left' },
  { key: 'state', align: 'left' },
  { key: 'attempts', align: 'right' },
  { key: 'next_attempt', align: 'left' },
  { key: 'target', align: 'left' },
  { key: 'last_error', align: 'left' },
] as const;

function eventRow(event: CallbackEventView): Record<string, unknown> {
  return {
    event: event.eventId,
    message: event.messageId,
    type: event.type,
    state: event.status,
    attempts: event.attempts,
    next_attempt: event.nextAttemptAt ? formatLocalTime(event.nextAttemptAt) : '',
    target: event.target,
    last_error: event.lastError,
  };
}

export async function listCallbacksCommand(
  deps: Deps,
  options: { states: CallbackEventStatus[] | undefined; messageId: number | undefined; limit: number; json: boolean },
): Promise<number> {
  const events = await listCallbackEvents(deps.db, { ...(options.states ? { statuses: options.states } : {}), messageId: options.messageId, limit: options.limit });
  if (options.json) process.stdout.write(`${JSON.stringify(events.map(eventJson), null, 2)}\n`);
  else process.stdout.write(`${formatTable(COLUMNS, events.map(eventRow))}\n`);
  return EXIT.ok;
}

export async function retryCallbackCommand(deps: Deps, eventId: number, json: boolean): Promise<number> {
  const result: CallbackRetryResult = await retryCallbackEvent(deps.db, eventId);
  const code = result.kind === 'not-found' ? EXIT.notFound : result.kind === 'refused' ? EXIT.refused : EXIT.ok;
  if (json) {
    const body: Record<string, unknown> = { action: 'retry-callback', result: result.kind === 'not-found' ? 'not_found' : result.kind, event_id: eventId };
    if (result.kind === 'done') Object.assign(body, { message_id: result.messageId, queued: result.queued, explanation: result.explanation });
    if (result.kind === 'nothing') body.explanation = result.explanation;
    if (result.kind === 'refused') body.reason = result.reason;
    process.stdout.write(`${JSON.stringify(body, null, 2)}\n`);
    return code;
  }
  switch (result.kind) {
    case 'not-found':
      process.stderr.write(`callback event ${eventId} not found\n`);
      break;
    case 'refused':
      process.stderr.write(`callback event ${eventId} not retried: ${result.reason}\n`);
      break;
    case 'nothing':
      process.stdout.write(`callback event ${eventId}: nothing to do, ${result.explanation}\n`);
      break;
    case 'done':
      process.stdout.write(`callback event ${eventId} (message ${result.messageId}): retried, ${result.explanation}\n`);
      break;
  }
  return code;
}
