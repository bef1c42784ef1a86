import { loadConfig } from '../config.ts';
import { callbackEmitPorts } from '../callbacks/callback-delivery.ts';
import { createDeps } from '../deps.ts';
import { createLogger } from '../logger.ts';
import { dropMessage, inspectionPorts, LISTABLE_STATES, listJobs, retryMessage, type ActionResult, type JobView, type ListableState } from '../queue/inspection.ts';
import { EXIT, parseCommandLine, parsePositiveInteger, runCommand, UsageError } from './args.ts';
import { formatLocalTime, formatTable } from './table.ts';
import { CALLBACK_USAGE, listCallbacksCommand, parseCallbackStates, retryCallbackCommand } from './callback-commands.ts';
import { listPollingCommand, POLLING_USAGE } from './delivery-commands.ts';

// `npm run jobs`: retry inspection. What the send queue holds and why, and a retry or drop of one
// message, recorded on its row (operator_actions). State is in Redis and PostgreSQL only, so this
// works while the service runs or not, and across its restarts.

const USAGE = `usage: npm run jobs -- list [--state <state>[,<state>...]] [--enterprise <number>] [--limit <n>] [--json]
       npm run jobs -- retry <message_id> [--reason <text>] [--json]
       npm run jobs -- drop <message_id> [--reason <text>] [--json]
${CALLBACK_USAGE}
${POLLING_USAGE}

  list     jobs by state: ${LISTABLE_STATES.join(', ')}. Without --state: what needs attention —
           active, waiting, delayed and failed jobs, and completed jobs whose message did not succeed
           (finished jobs expire from Redis: "npm run report -- failures" has the full history).
  retry    failed (never accepted by WebSMS) → queued and sent again; unknown → looked up at WebSMS
           first and resent only if WebSMS never received it; a delayed job runs now; success is refused.
  drop     removes the job; a message not yet sent is closed as failed, one whose last call may have
           reached WebSMS (sending) as unknown.

exit codes: ${EXIT.ok} done (or nothing to do) · ${EXIT.notFound} no such message · ${EXIT.usage} usage or configuration ·
            ${EXIT.unavailable} PostgreSQL or Redis unavailable · ${EXIT.refused} refused in the message's current state`;

function parseStates(raw: string[] | undefined): ListableState[] | undefined {
  if (raw === undefined) return undefined;
  const states = raw.flatMap((value) => value.split(',')).map((s) => s.trim());
  for (const state of states) {
    if (!(LISTABLE_STATES as readonly string[]).includes(state)) throw new UsageError(`--state must be one of ${LISTABLE_STATES.join(', ')} (got "${state}")`);
  }
  return [...new Set(states)] as ListableState[];
}

function parseMessageId(positionals: string[]): number {
  if (positionals.length !== 2) throw new UsageError(`${positionals[0]} takes exactly one message id`);
  return parsePositiveInteger(positionals[1] ?? '', 'message id', Number.MAX_SAFE_INTEGER);
}

function jobJson(job: JobView): Record<string, unknown> {
  return {
    message_id: job.messageId,
    job_id: job.jobId,
    enterprise_number: job.enterpriseNumber,
    state: job.state,
    attempts_made: job.attemptsMade,
    attempts_allowed: job.attemptsAllowed,
    position: job.position,
    expected_send_at: job.expectedSendAt?.toISOString() ?? null,
    next_attempt_at: job.nextAttemptAt?.toISOString() ?? null,
    last_error: job.lastError,
    row_status: job.rowStatus,
    enqueued_at: job.enqueuedAt.toISOString(),
  };
}

function jobRow(job: JobView): Record<string, unknown> {
  return {
    message: job.messageId,
    enterprise: job.enterpriseNumber,
    state: job.state,
    attempts: `${job.attemptsMade}/${job.attemptsAllowed}`,
    position: job.position ?? '',
    expected_send: job.expectedSendAt ? formatLocalTime(job.expectedSendAt) : '',
    next_attempt: job.nextAttemptAt ? formatLocalTime(job.nextAttemptAt) : '',
    row_status: job.rowStatus ?? '(no row)',
    last_error: job.lastError,
  };
}

const LIST_COLUMNS = [
  { key: 'message', align: 'right' },
  { key: 'enterprise', align: 'left' },
  { key: 'state', align: 'left' },
  { key: 'attempts', align: 'right' },
  { key: 'position', align: 'right' },
  { key: 'expected_send', align: 'left' },
  { key: 'next_attempt', align: 'left' },
  { key: 'row_status', align: 'left' },
  { key: 'last_error', align: 'left' },
] as const;

function report(action: 'retry' | 'drop', result: ActionResult, json: boolean): number {
  const code = result.kind === 'not-found' ? EXIT.notFound : result.kind === 'refused' ? EXIT.refused : EXIT.ok;
  if (json) {
    process.stdout.write(`${JSON.stringify({ action, ...resultJson(result) }, null, 2)}\n`);
    return code;
  }
  const verb = action === 'retry' ? 'retried' : 'dropped';
  switch (result.kind) {
    case 'not-found':
      process.stderr.write(`message ${result.messageId} not found\n`);
      break;
    case 'refused':
      process.stderr.write(`message ${result.messageId} not ${verb}: ${result.reason}\n`);
      break;
    case 'nothing':
      process.stdout.write(`message ${result.messageId}: nothing to do, ${result.explanation}\n`);
      break;
    case 'done':
      process.stdout.write(
        [
          `message ${result.messageId} (enterprise ${result.enterpriseNumber}): ${verb}`,
          `  row: ${result.rowFrom} → ${result.rowTo}: ${result.explanation}`,
          `  job: ${result.jobNote}`,
          '  recorded in user_sms_send.operator_actions',
        ].join('\n') + '\n',
      );
      break;
  }
  return code;
}

function resultJson(result: ActionResult): Record<string, unknown> {
  switch (result.kind) {
    case 'done':
      return {
        result: 'done',
        message_id: result.messageId,
        enterprise_number: result.enterpriseNumber,
        row_from: result.rowFrom,
        row_to: result.rowTo,
        job_from: result.jobFrom,
        job: result.jobNote,
        explanation: result.explanation,
      };
    case 'nothing':
      return { result: 'nothing', message_id: result.messageId, explanation: result.explanation };
    case 'refused':
      return { result: 'refused', message_id: result.messageId, reason: result.reason };
    case 'not-found':
      return { result: 'not_found', message_id: result.messageId };
  }
}

async function main(): Promise<number> {
  const { values, positionals } = parseCommandLine(process.argv.slice(2), {
    state: { type: 'string', multiple: true },
    enterprise: { type: 'string' },
    message: { type: 'string' },
    limit: { type: 'string' },
    reason: { type: 'string' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    return EXIT.ok;
  }
  const command = positionals[0];
  if (command === 'callbacks' || command === 'retry-callback') return callbackCommand(command, positionals, values);
  if (command === 'polling') return pollingCommand(positionals, values);
  if (values.message !== undefined) throw new UsageError('--message applies to callbacks only');
  if (command !== 'list' && command !== 'retry' && command !== 'drop') throw new UsageError(command ? `unknown command "${command}"` : 'give a command: list, retry, drop, callbacks, retry-callback or polling');
  if (command === 'list' && positionals.length !== 1) throw new UsageError('list takes no positional arguments');
  if (command !== 'list' && (values.state || values.enterprise || values.limit)) throw new UsageError('--state, --enterprise and --limit apply to list only');
  if (command === 'list' && values.reason !== undefined) throw new UsageError('--reason applies to retry and drop only');
  const states = parseStates(values.state);
  const limit = values.limit === undefined ? 200 : parsePositiveInteger(values.limit, '--limit', 10_000);
  const messageId = command === 'list' ? 0 : parseMessageId(positionals);

  const config = loadConfig();
  const deps = await createDeps(config, createLogger('error', process.stderr), 'api');
  // A drop raises the caller's event for the message's new status, as any final status does.
  const callbackEvents = callbackEmitPorts(deps.db, deps.logger);
  const ports = inspectionPorts(deps, callbackEvents);
  try {
    if (command === 'list') {
      const jobs = await listJobs(ports, { ...(states ? { states } : {}), enterprise: values.enterprise, limit });
      if (values.json) process.stdout.write(`${JSON.stringify(jobs.map(jobJson), null, 2)}\n`);
      else process.stdout.write(`${formatTable(LIST_COLUMNS, jobs.map(jobRow))}\n`);
      return EXIT.ok;
    }
    const request = { messageId, reason: values.reason };
    const result = command === 'retry' ? await retryMessage(ports, request) : await dropMessage(ports, request);
    return report(command, result, values.json);
  } finally {
    await deps.close();
  }
}

async function pollingCommand(positionals: string[], values: { state?: string[] | undefined; message?: string | undefined; reason?: string | undefined; enterprise?: string | undefined; limit?: string | undefined; json?: boolean | undefined }): Promise<number> {
  if (positionals.length !== 1) throw new UsageError('polling takes no positional arguments');
  if (values.state || values.message !== undefined || values.reason !== undefined) throw new UsageError('polling takes --enterprise, --limit and --json only');
  const limit = values.limit === undefined ? 200 : parsePositiveInteger(values.limit, '--limit', 10_000);
  const config = loadConfig();
  const deps = await createDeps(config, createLogger('error', process.stderr), 'api');
  try {
    return await listPollingCommand(deps.db, { enterprise: values.enterprise, limit, json: values.json ?? false });
  } finally {
    await deps.close();
  }
}

async function callbackCommand(
  command: 'callbacks' | 'retry-callback',
  positionals: string[],
  values: { state?: string[] | undefined; enterprise?: string | undefined; message?: string | undefined; limit?: string | undefined; reason?: string | undefined; json?: boolean | undefined },
): Promise<number> {
  if (values.enterprise !== undefined || values.reason !== undefined) throw new UsageError('--enterprise and --reason do not apply to callbacks');
  if (command === 'callbacks' && positionals.length !== 1) throw new UsageError('callbacks takes no positional arguments');
  if (command === 'retry-callback' && (values.state || values.message || values.limit)) throw new UsageError('--state, --message and --limit apply to callbacks only');
  const states = parseCallbackStates(values.state);
  const limit = values.limit === undefined ? 200 : parsePositiveInteger(values.limit, '--limit', 10_000);
  const messageId = values.message === undefined ? undefined : parsePositiveInteger(values.message, '--message', Number.MAX_SAFE_INTEGER);
  const eventId = command === 'retry-callback' ? parseEventId(positionals) : 0;
  const config = loadConfig();
  const deps = await createDeps(config, createLogger('error', process.stderr), 'api');
  try {
    if (command === 'callbacks') return await listCallbacksCommand(deps, { states, messageId, limit, json: values.json ?? false });
    return await retryCallbackCommand(deps, eventId, values.json ?? false);
  } finally {
    await deps.close();
  }
}

function parseEventId(positionals: string[]): number {
  if (positionals.length !== 2) throw new UsageError('retry-callback takes exactly one event id');
  return parsePositiveInteger(positionals[1] ?? '', 'event id', Number.MAX_SAFE_INTEGER);
}

await runCommand(USAGE, main);
