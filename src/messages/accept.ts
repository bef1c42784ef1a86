import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import { maskPhone } from '../logger.ts';
import { canSend, findEnterprise, notFoundMessage } from '../enterprises/repository.ts';
import type { WaitHandle } from '../queue/completion-waiter.ts';
import {
  errorEnvelope,
  isFinal,
  outcomeEnvelope,
  queuedEnvelope,
  recordOutcome,
  type DeliveryOutcome,
  type MessageRecord,
  type SendEnvelope,
} from './message.ts';
import { findMessage, insertPendingMessage, insertRefusedMessage, recordFailed, type NewMessage } from './repository.ts';

// Accepting a message: record it, queue it, and wait (bounded) for the worker's outcome.

export interface SendCommand {
  enterpriseNumber: string;
  /** E.164, validated */
  phone: string;
  text: string;
  sender: string | null;
  customId: string | null;
  /** false: answer 202 at once instead of waiting for the outcome */
  wait: boolean;
}

export interface Caller {
  serviceName: string | null;
  requestIp: string | null;
  userAgent: string | null;
}

export interface AcceptDeps {
  db: Db;
  logger: Logger;
  defaultSender: string;
  sendWaitMs: number;
  enqueue: (messageId: number, enterpriseNumber: string) => Promise<void>;
  waitForJob: (messageId: number, deadlineMs: number) => WaitHandle;
  /** ms until the enterprise's next free slot, for the expected send time of a queued message */
  nextSlotInMs: (enterpriseNumber: string) => Promise<number>;
}

export interface SendAnswer {
  httpStatus: 200 | 202 | 404 | 503;
  body: SendEnvelope;
}

export async function acceptMessage(deps: AcceptDeps, command: SendCommand, caller: Caller): Promise<SendAnswer> {
  const enterprise = await findEnterprise(deps.db, command.enterpriseNumber);
  const message: NewMessage = {
    enterpriseNumber: command.enterpriseNumber,
    enterpriseName: enterprise?.name ?? null,
    phone: command.phone,
    text: command.text,
    sender: command.sender ?? deps.defaultSender,
    customId: command.customId,
    ...caller,
  };
  const log = { enterprise: command.enterpriseNumber, phone: maskPhone(command.phone), service: caller.serviceName, ip: caller.requestIp };

  if (!canSend(enterprise)) {
    // Recorded for the security audit (attempts for unknown enterprises), never sent.
    const error = notFoundMessage(command.enterpriseNumber);
    const id = await insertRefusedMessage(deps.db, message, error, 'enterprise_not_found');
    deps.logger.warn({ ...log, messageId: id, outcome: 'failed' }, 'enterprise not found or not configured');
    return { httpStatus: 404, body: errorEnvelope(error, { custom_id: command.customId, id, status: 'failed' }) };
  }

  const id = await insertPendingMessage(deps.db, message);
  const wait = command.wait && deps.sendWaitMs > 0 ? deps.waitForJob(id, deps.sendWaitMs) : undefined;
  try {
    await deps.enqueue(id, command.enterpriseNumber);
  } catch (error) {
    wait?.cancel();
    return queueUnavailable(deps, id, command, log, error);
  }

  if (!wait) return answerFromRow(deps, id);
  const finish = await wait.finished;
  if (finish.kind === 'completed' && finish.outcome && isFinal(finish.outcome.status)) {
    return finalAnswer(id, command.customId, finish.outcome);
  }
  return answerFromRow(deps, id);
}

/** The row as it stands: final → 200 with its result; otherwise 202 with when it should go out. */
export async function answerFromRow(deps: Pick<AcceptDeps, 'db' | 'nextSlotInMs'>, id: number): Promise<SendAnswer> {
  const record = await findMessage(deps.db, id);
  if (!record) throw new Error(`message ${id} vanished`);
  if (isFinal(record.status)) return finalAnswer(record.id, record.customId, recordOutcome(record));
  return { httpStatus: 202, body: queuedEnvelope(record, await expectedSendAt(deps, record)) };
}

function finalAnswer(id: number, customId: string | null, outcome: DeliveryOutcome): SendAnswer {
  // A WebSMS refusal is still a 200 with success:false, as the old service answered.
  return { httpStatus: 200, body: outcomeEnvelope(id, customId, outcome) };
}

async function expectedSendAt(deps: Pick<AcceptDeps, 'nextSlotInMs'>, record: MessageRecord): Promise<Date> {
  const now = Date.now();
  if (record.notBefore && record.notBefore.getTime() > now) return record.notBefore;
  try {
    return new Date(now + (await deps.nextSlotInMs(record.enterpriseNumber)));
  } catch {
    return new Date(now);
  }
}

/**
 * Redis refused the job. The caller is told it was not sent and may retry, so the row is closed
 * as failed; should even that write fail, the row stays `pending` and the sweeper sends it.
 */
async function queueUnavailable(deps: AcceptDeps, id: number, command: SendCommand, log: object, error: unknown): Promise<SendAnswer> {
  const text = 'Queue unavailable: the message was not sent, retry later';
  deps.logger.error({ ...log, messageId: id, err: describe(error) }, 'enqueue failed');
  let closed = false;
  try {
    closed = await recordFailed(deps.db, id, { code: 'queue_unavailable', message: text });
  } catch (dbError) {
    deps.logger.error({ messageId: id, err: describe(dbError) }, 'could not record the failed enqueue; the sweeper will send the message');
  }
  const body = closed
    ? errorEnvelope(text, { custom_id: command.customId, id, status: 'failed' })
    : errorEnvelope(`Queue unavailable: message ${id} is stored and will be sent when the queue is back`, {
        custom_id: command.customId,
        id,
        status: 'pending',
      });
  return { httpStatus: 503, body };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
