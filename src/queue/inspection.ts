import { hostname, userInfo } from 'node:os';
import type { Job, Queue } from 'bullmq';
import type { RedisClient } from '../redis-connection.ts';
import type { Db } from '../db/database.ts';
import type { Deps } from '../deps.ts';
import { emitOutcomeEvent, type CallbackEmitPorts } from '../callbacks/emit-message-event.ts';
import type { MessageRecord, MessageStatus } from '../messages/message.ts';
import { messageStanding, type MessageStanding } from '../line/standing.ts';
import { planCancel, planDrop, planRetry, type JobStateName, type JobStep, type OperatorPlan } from '../messages/operator-actions.ts';
import { findMessage, findMessagesByIds, recordOperatorAction, type OperatorActionEntry } from '../messages/repository.ts';
import { jobIdFor, type SendJobData } from './jobs.ts';

// Retry inspection: what the send queue holds and why, and an operator's retry or drop of one
// message. The state lives in Redis (jobs) and PostgreSQL (rows), so this works from any process at
// any time, across restarts of the service. The row is changed first and the job second: if the
// job step fails, the row is still right, and the sweeper gives an unfinished row its job back.

export interface InspectionPorts {
  db: Db;
  queue: Queue<SendJobData>;
  /** the queue's own command connection, for the delayed set's scores */
  redis: RedisClient;
  enqueue: (messageId: number, enterpriseNumber: string) => Promise<void>;
  /** WebSMS call budget: a row `sending` for longer than this plus a grace has no live call */
  websmsTimeoutMs: number;
  /** Takes a closed message out of its enterprise's line, so the messages behind it move up (src/line). */
  takeOutOfLine?: (messageId: number, enterpriseNumber: string) => Promise<void>;
  /**
   * Raises the caller's event for a message closed here (src/callbacks emitOutcomeEvent). Should it
   * fail, the change is still owed (callback_owed) and the background work raises it.
   */
  raiseEvent?: (messageId: number, status: MessageStatus) => Promise<void>;
  /** Where a waiting message stands in its enterprise's line (src/line/standing.ts). */
  standing?: (record: Pick<MessageRecord, 'id' | 'enterpriseNumber' | 'status' | 'notBefore'>) => Promise<MessageStanding>;
}

/** The ports of a process's own connections (src/deps.ts), raising events through `callbackEvents`. */
export function inspectionPorts(deps: Deps, callbackEvents: CallbackEmitPorts): InspectionPorts {
  return {
    db: deps.db,
    queue: deps.queue,
    redis: deps.redis,
    enqueue: deps.enqueue,
    websmsTimeoutMs: deps.config.websms.timeoutMs,
    takeOutOfLine: deps.takeOutOfLine,
    raiseEvent: (messageId, status) => emitOutcomeEvent(callbackEvents, messageId, status),
    standing: (record) => messageStanding(deps.line, record),
  };
}

export type ListableState = 'active' | 'waiting' | 'delayed' | 'failed' | 'completed';
export const LISTABLE_STATES: readonly ListableState[] = ['active', 'waiting', 'delayed', 'failed', 'completed'];

export interface JobView {
  messageId: number;
  jobId: string;
  enterpriseNumber: string;
  state: ListableState;
  attemptsMade: number;
  attemptsAllowed: number;
  /**
   * delayed jobs: when the job's own timer runs it again. For a message waiting in its line that is
   * only a backstop (the send before it wakes it at its turn): `expectedSendAt` is when it should go.
   */
  nextAttemptAt: Date | null;
  /** a message waiting in its enterprise's line: messages of the enterprise before it (0 = next) */
  position: number | null;
  /** a message waiting in its enterprise's line: when WebSMS is expected to receive it */
  expectedSendAt: Date | null;
  /** the job's last failure, else the row's error, else why it waits */
  lastError: string | null;
  /** null: the job has no row (it is dropped when it runs) */
  rowStatus: MessageStatus | null;
  enqueuedAt: Date;
}

export interface ListFilter {
  /** undefined: what needs attention — active, waiting, delayed and failed jobs, and completed jobs whose message did not succeed */
  states?: readonly ListableState[];
  enterprise?: string;
  limit: number;
}

const PAGE = 200;
// Same grace as the worker's reconcile: after our own call times out, WebSMS may still be processing it.
const IN_FLIGHT_GRACE_MS = 1_000;

export async function listJobs(ports: InspectionPorts, filter: ListFilter): Promise<JobView[]> {
  const attentionOnly = filter.states === undefined;
  const states = filter.states ?? LISTABLE_STATES;
  const picked: Array<{ job: Job<SendJobData>; state: ListableState }> = [];
  for (const state of states) {
    for (let start = 0; picked.length < filter.limit; start += PAGE) {
      const page = await ports.queue.getJobs([state], start, start + PAGE - 1);
      for (const job of page) {
        if (picked.length >= filter.limit) break;
        if (filter.enterprise !== undefined && job.data.enterpriseNumber !== filter.enterprise) continue;
        if (attentionOnly && state === 'completed' && outcomeStatus(job) === 'success') continue;
        picked.push({ job, state });
      }
      if (page.length < PAGE) break;
    }
  }

  const rows = await findMessagesByIds(ports.db, picked.map(({ job }) => job.data.messageId));
  const delayedAt = await delayedTimes(ports, picked.filter((p) => p.state === 'delayed').map((p) => p.job.id ?? ''));
  return Promise.all(picked.map(async ({ job, state }) => {
    const row = rows.get(job.data.messageId);
    const nextAttemptAt = state === 'delayed' ? (delayedAt.get(job.id ?? '') ?? null) : null;
    const waiting = row && ports.standing && (state === 'delayed' || state === 'waiting') ? await ports.standing(row) : undefined;
    return {
      messageId: job.data.messageId,
      jobId: job.id ?? '',
      enterpriseNumber: job.data.enterpriseNumber,
      state,
      attemptsMade: job.attemptsMade,
      attemptsAllowed: job.opts.attempts ?? 1,
      nextAttemptAt,
      position: waiting?.position ?? null,
      expectedSendAt: waiting?.expectedSendAt ?? null,
      lastError: job.failedReason || row?.error || (state === 'delayed' && row?.notBefore ? 'waiting for a rate-limit slot of its enterprise' : null),
      rowStatus: row?.status ?? null,
      enqueuedAt: new Date(job.timestamp),
    };
  }));
}

function outcomeStatus(job: Job<SendJobData>): unknown {
  const value: unknown = job.returnvalue;
  return typeof value === 'object' && value !== null ? (value as { status?: unknown }).status : undefined;
}

/** BullMQ scores the delayed set as (run-at ms × 4096 + a counter), see getDelayedScore.lua. */
async function delayedTimes(ports: InspectionPorts, jobIds: string[]): Promise<Map<string, Date>> {
  const times = new Map<string, Date>();
  if (jobIds.length === 0) return times;
  const pipeline = ports.redis.pipeline();
  for (const id of jobIds) pipeline.zscore(ports.queue.toKey('delayed'), id);
  const results = (await pipeline.exec()) ?? [];
  jobIds.forEach((id, index) => {
    const score = results[index]?.[1];
    if (typeof score === 'string') times.set(id, new Date(Math.floor(Number(score) / 0x1000)));
  });
  return times;
}

export interface ActionRequest {
  messageId: number;
  /** free text recorded with the action */
  reason?: string | undefined;
  /** who runs it; defaults to the OS user@host */
  by?: string | undefined;
}

export type ActionResult =
  | { kind: 'done'; messageId: number; enterpriseNumber: string; rowFrom: MessageStatus; rowTo: MessageStatus; jobFrom: JobStateName; jobNote: string; explanation: string }
  | { kind: 'nothing'; messageId: number; explanation: string }
  | { kind: 'refused'; messageId: number; reason: string }
  | { kind: 'not-found'; messageId: number };

export async function retryMessage(ports: InspectionPorts, request: ActionRequest): Promise<ActionResult> {
  return act(ports, request, 'retry');
}

export async function dropMessage(ports: InspectionPorts, request: ActionRequest): Promise<ActionResult> {
  return act(ports, request, 'drop');
}

/** A caller's cancel of a message not yet claimed for sending; the same path as a drop of one. */
export async function cancelMessage(ports: InspectionPorts, request: ActionRequest): Promise<ActionResult> {
  return act(ports, request, 'cancel');
}

const PLANS = { retry: planRetry, drop: planDrop, cancel: planCancel } as const;

async function act(ports: InspectionPorts, request: ActionRequest, action: keyof typeof PLANS): Promise<ActionResult> {
  const { messageId } = request;
  const record = await findMessage(ports.db, messageId);
  if (!record) return { kind: 'not-found', messageId };
  const jobId = jobIdFor(messageId);
  const jobFrom = toStateName(await ports.queue.getJobState(jobId));
  const facts = { status: record.status, attempts: record.attempts };
  const plan: OperatorPlan = PLANS[action](facts, jobFrom);
  if (plan.kind === 'refuse') return { kind: 'refused', messageId, reason: plan.reason };
  if (plan.kind === 'nothing') return { kind: 'nothing', messageId, explanation: plan.explanation };

  const by = request.by ?? operatorName();
  const entry: OperatorActionEntry = {
    action,
    at: new Date().toISOString(),
    by,
    from: record.status,
    to: plan.rowTo,
    job: `${jobFrom}${plan.jobStep === 'none' ? '' : ` → ${plan.jobStep}`}`,
    reason: request.reason ?? null,
  };
  const closing = action !== 'retry' && plan.rowTo !== record.status;
  const changed = await recordOperatorAction(ports.db, messageId, {
    from: record.status,
    to: plan.rowTo,
    entry,
    ...(closing ? { failure: closingFailure(action === 'drop' ? `operator ${by}` : by, request.reason, plan.rowTo, record.error) } : {}),
    // A `sending` row may have a live WebSMS call: dropping it then could race the worker's result.
    ...(record.status === 'sending' && action === 'drop' ? { quietForMs: ports.websmsTimeoutMs + IN_FLIGHT_GRACE_MS } : {}),
  });
  if (!changed) {
    const now = await findMessage(ports.db, messageId);
    const reason =
      now?.status === record.status && record.status === 'sending'
        ? `a WebSMS call for it may still be in flight (claimed less than ${Math.ceil((ports.websmsTimeoutMs + IN_FLIGHT_GRACE_MS) / 1000)} s ago); run the command again in a moment`
        : `its status changed from ${record.status} to ${now?.status ?? '(deleted)'} meanwhile; look again and rerun`;
    return { kind: 'refused', messageId, reason };
  }

  const jobNote = await carryOutJobStep(ports, messageId, record.enterpriseNumber, jobFrom, plan.jobStep);
  // Should Redis not answer now, the line heals by itself: whoever finds a closed message at its head takes it out.
  if (closing) {
    await ports.takeOutOfLine?.(messageId, record.enterpriseNumber).catch(() => undefined);
    await ports.raiseEvent?.(messageId, plan.rowTo).catch(() => undefined);
  }
  return {
    kind: 'done',
    messageId,
    enterpriseNumber: record.enterpriseNumber,
    rowFrom: record.status,
    rowTo: plan.rowTo,
    jobFrom,
    jobNote,
    explanation: plan.explanation,
  };
}

async function carryOutJobStep(ports: InspectionPorts, messageId: number, enterpriseNumber: string, jobFrom: JobStateName, step: JobStep): Promise<string> {
  const jobId = jobIdFor(messageId);
  switch (step) {
    case 'retry-finished': {
      const job = await ports.queue.getJob(jobId);
      if (!job) {
        await ports.enqueue(messageId, enterpriseNumber);
        return 'its job had expired meanwhile; a new job was added';
      }
      // A fresh attempt budget; attemptsStarted is kept so the worker reads the row's state first.
      await job.retry(jobFrom === 'completed' ? 'completed' : 'failed', { resetAttemptsMade: true });
      return `job moved from ${jobFrom} back to waiting`;
    }
    case 'promote': {
      const job = await ports.queue.getJob(jobId);
      await job?.promote();
      return 'delayed job promoted to run now';
    }
    case 'enqueue':
      await ports.enqueue(messageId, enterpriseNumber);
      return 'it had no job (finished jobs expire); a new job was added';
    case 'remove': {
      const removed = await ports.queue.remove(jobId);
      // 0: a worker took the job in the meantime; it finds the row finished and sends nothing.
      return removed === 1 ? `job (${jobFrom}) removed from the queue` : 'job could not be removed (a worker took it); it will find the message closed and send nothing';
    }
    case 'none':
      return jobFrom === 'missing' ? 'no job in the queue' : `job left ${jobFrom}`;
  }
}

/** What the row says about a cancelled or dropped message: `cancelled` (never sent) reports as failed. */
function closingFailure(by: string, reason: string | undefined, to: MessageStatus, previous: string | null): { code: string; message: string } {
  const why = reason ? `: ${reason}` : '';
  const last = previous ? ` (last error: ${previous})` : '';
  if (to === 'unknown') return { code: 'dropped_by_operator', message: `Dropped by ${by}${why} while its outcome was unknown: it may have been sent${last}` };
  return { code: 'cancelled', message: `Cancelled by ${by}${why}; not sent${last}` };
}

function toStateName(state: string): JobStateName {
  switch (state) {
    case 'active':
    case 'delayed':
    case 'failed':
    case 'completed':
      return state;
    case 'unknown':
      return 'missing';
    default:
      // waiting, prioritized, waiting-children: queued for a worker
      return 'waiting';
  }
}

function operatorName(): string {
  let user = 'unknown';
  try {
    user = userInfo().username;
  } catch {
    // no passwd entry (some containers)
  }
  return `${user}@${hostname()}`;
}
