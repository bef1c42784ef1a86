import type { Db } from '../db/database.ts';
import type { Logger } from '../logger.ts';
import { maskPhone } from '../logger.ts';
import { canSend, findEnterpriseOnServerClock, notFoundMessage } from '../enterprises/repository.ts';
import { ANSWER_GRACE_MS } from '../db/database.ts';
import type { WaitHandle } from '../queue/completion-waiter.ts';
import {
  errorEnvelope,
  isFinal,
  outcomeEnvelope,
  queuedEnvelope,
  acceptedEnvelope,
  recordOutcome,
  type DeliveryOutcome,
  type MessageRecord,
  type SendEnvelope,
} from './message.ts';
import { addStatusKeyHash, findMessage, insertRefusedMessage, recordNeverQueued, type NewMessage } from './repository.ts';
import { newStatusKey, STATUS_KEYS_KEPT, statusUrl } from './status-key.ts';
import { admitMessage } from './admission.ts';
import { dailyCapMessage } from './daily-cap.ts';
import type { MessageStanding } from '../line/standing.ts';
import { IDEMPOTENCY_HEADER, KEY_REUSED_MESSAGE, requestHash } from './idempotency.ts';
import type { AllowedHost } from '../callbacks/callback-hosts.ts';
import { sendPhase } from '../metrics/send-phases.ts';

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
  /** the caller's Idempotency-Key, validated (idempotency.ts) */
  idempotencyKey?: string | null;
  /** where to send this message's events (src/callbacks); its host already checked against the allowed list */
  callbackUrl?: string | null;
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
  /** service_name of every row whose caller names itself neither by token nor by X-Service-Name */
  defaultServiceName: string;
  sendWaitMs: number;
  /** Puts the message in its enterprise's line and queues it; says when it is expected to go (ms, Redis clock). */
  enqueue: (messageId: number, enterpriseNumber: string) => Promise<{ etaMs: number } | void>;
  waitForJob: (messageId: number, deadlineMs: number) => WaitHandle;
  /** where a queued message stands in its enterprise's line, and when it is expected to go (src/line/standing.ts) */
  standing: (record: MessageRecord) => Promise<MessageStanding>;
  /** how long an Idempotency-Key keeps naming its message; default 24 h */
  idempotencyRetentionS?: number;
  /** messages per enterprise per server-local day; undefined or 0: no cap */
  dailyCapPerEnterprise?: number | undefined;
  /** CALLBACK_ALLOWED_HOSTS; undefined or empty: a callback_url is refused */
  callbackHosts?: readonly AllowedHost[] | undefined;
}

export interface SendAnswer {
  httpStatus: 200 | 202 | 404 | 422 | 429 | 503;
  body: SendEnvelope & { errors?: Array<{ field: string; message: string }> };
  /** response headers the answer needs (Retry-After, Idempotent-Replayed) */
  headers?: Record<string, string>;
}

const DEFAULT_IDEMPOTENCY_RETENTION_S = 86_400;

/**
 * How long the insert of a message that will be sent may take to reach PostgreSQL (admission.ts, "the
 * deadline"): half the grace pg gives PostgreSQL past its statement_timeout. An insert takes well under
 * a millisecond to arrive.
 */
const ADMISSION_WINDOW_MS = ANSWER_GRACE_MS / 2;

export async function acceptMessage(deps: AcceptDeps, command: SendCommand, caller: Caller): Promise<SendAnswer> {
  const found = await findEnterpriseOnServerClock(deps.db, command.enterpriseNumber);
  sendPhase({ phase: 'enterprise-read', command });
  const enterprise = found?.enterprise;
  const message: NewMessage = {
    enterpriseNumber: command.enterpriseNumber,
    enterpriseName: enterprise?.name ?? null,
    phone: command.phone,
    text: command.text,
    sender: command.sender ?? deps.defaultSender,
    customId: command.customId,
    callbackUrl: command.callbackUrl ?? null,
    ...caller,
  };
  const log = { enterprise: command.enterpriseNumber, phone: maskPhone(command.phone), service: caller.serviceName, ip: caller.requestIp };

  if (!found || !canSend(enterprise)) {
    // Recorded for the security audit (attempts for unknown enterprises), never sent.
    const error = notFoundMessage(command.enterpriseNumber);
    const id = await insertRefusedMessage(deps.db, message, error, 'enterprise_not_found');
    deps.logger.warn({ ...log, messageId: id, outcome: 'failed' }, 'enterprise not found or not configured');
    return { httpStatus: 404, body: errorEnvelope(error, { custom_id: command.customId, id, status: 'failed' }) };
  }

  const key = command.idempotencyKey ?? null;
  // The caller's link to this message (status_url): only its hash is stored.
  const statusKey = newStatusKey();
  const admission = await admitMessage(deps.db, { ...message, statusKeySha256: statusKey.sha256 }, {
    idempotency: key
      ? {
          key,
          requestHash: requestHash({
            enterpriseNumber: command.enterpriseNumber,
            phone: command.phone,
            text: command.text,
            sender: message.sender ?? deps.defaultSender,
            customId: command.customId,
          }),
          retentionS: deps.idempotencyRetentionS ?? DEFAULT_IDEMPOTENCY_RETENTION_S,
        }
      : undefined,
    dailyCap: deps.dailyCapPerEnterprise,
  }, { clock: found.clock, ms: ADMISSION_WINDOW_MS });
  if (admission.kind === 'late') {
    deps.logger.error(log, 'PostgreSQL received the message after its admission deadline; nothing stored, answered 503');
    const error = 'Service temporarily unavailable (database too slow); nothing was sent, retry later';
    return { httpStatus: 503, body: errorEnvelope(error, { custom_id: command.customId }), headers: { 'Retry-After': '5' } };
  }
  if (admission.kind === 'unknown') {
    // The one 503 that cannot say "nothing was sent": the insert may have committed, and a row that
    // did is sent by the sweeper. The caller is told so; an Idempotency-Key makes its retry safe.
    deps.logger.error({ ...log, err: `${describe(admission.lost)}; then ${describe(admission.lookUp)}` }, 'the answer to the message insert was lost and PostgreSQL could not be asked since; answered 503, outcome unknown');
    const error =
      'Service temporarily unavailable (database): the message may have been stored, and if so it will be sent; a retry with the same Idempotency-Key is safe, one without may send it twice';
    return { httpStatus: 503, body: errorEnvelope(error, { custom_id: command.customId, status: 'unknown' }), headers: { 'Retry-After': '5' } };
  }
  if (admission.kind === 'repeat') return answerRepeat(deps, admission.id, admission.sameRequest, command.wait);
  if (admission.kind === 'over-daily-cap') {
    const retryAt = new Date(Date.now() + admission.secondsLeft * 1000);
    const error = dailyCapMessage(command.enterpriseNumber, admission.cap, retryAt);
    // Recorded like every refusal, without the key: the caller may retry with it tomorrow.
    const id = await insertRefusedMessage(deps.db, message, error, 'daily_cap');
    deps.logger.warn({ ...log, messageId: id, cap: admission.cap }, 'daily cap reached; message refused');
    return {
      httpStatus: 429,
      body: errorEnvelope(error, { custom_id: command.customId, id, status: 'failed' }),
      headers: { 'Retry-After': String(admission.secondsLeft) },
    };
  }
  const id = admission.id;
  if (admission.afterLostAnswer) deps.logger.warn({ ...log, messageId: id }, 'the answer to the message insert was lost; the row was found by its provider_ref, so the message goes on as accepted');
  sendPhase({ phase: 'admitted', command, messageId: id });
  const link = statusUrl(id, statusKey.key);
  const wait = command.wait && deps.sendWaitMs > 0 ? deps.waitForJob(id, deps.sendWaitMs) : undefined;
  let place: { etaMs: number } | void;
  try {
    place = await deps.enqueue(id, command.enterpriseNumber);
    sendPhase({ phase: 'enqueued', command });
  } catch (error) {
    wait?.cancel();
    return queueUnavailable(deps, id, command, log, error);
  }
  // Asked not to wait: 202 as of acceptance, always (a fast worker may already be sending it; the
  // status_url tells what became of it). Its place in line gives the expected time without reading
  // the row back.
  if (!command.wait && place) return { httpStatus: 202, body: acceptedEnvelope(id, command.customId, new Date(Math.max(Date.now(), place.etaMs)), link) };
  // Its turn comes after the wait would end: answer 202 now instead of holding the caller for nothing.
  if (place && place.etaMs > Date.now() + deps.sendWaitMs) wait?.cancel();

  if (!wait) return answerQueued(deps, id, command.customId, link);
  const finish = await wait.finished;
  sendPhase({ phase: 'outcome-received', command });
  if (finish.kind === 'completed' && finish.outcome && isFinal(finish.outcome.status)) {
    return finalAnswer(id, command.customId, finish.outcome, link);
  }
  return answerQueued(deps, id, command.customId, link);
}

/**
 * answerFromRow for a message that is stored and queued, so it will be sent: should its row be
 * unreadable now (PostgreSQL went away during the wait), the caller must still hear 202 with its id,
 * never the generic 503 "nothing was sent, retry later", whose retry would send it twice. Found by
 * test/faults/postgres-outage.test.ts.
 */
async function answerQueued(deps: AcceptDeps, id: number, customId: string | null, link: string): Promise<SendAnswer> {
  try {
    return await answerFromRow(deps, id, link);
  } catch (error) {
    deps.logger.warn({ messageId: id, err: describe(error) }, 'message queued but its state could not be read; answering 202');
    // Unknown without the row and the line; "now" as expectedSendAt does when it cannot ask.
    return { httpStatus: 202, body: acceptedEnvelope(id, customId, new Date(), link) };
  }
}

/**
 * An authenticated caller limited to other enterprises (API_TOKENS): exactly the unknown-enterprise
 * answer, so enterprise numbers cannot be probed. Recorded for the audit like an unknown enterprise,
 * under the number asked for and the caller's name, with `enterprise_not_allowed` so operators can tell
 * a probe from a typo; the enterprise is not even looked up, so its name is not on the row.
 */
export async function refuseEnterpriseNotAllowed(deps: Pick<AcceptDeps, 'db' | 'logger' | 'defaultSender'>, command: SendCommand, caller: Caller): Promise<SendAnswer> {
  const error = notFoundMessage(command.enterpriseNumber);
  const message: NewMessage = {
    enterpriseNumber: command.enterpriseNumber,
    enterpriseName: null,
    phone: command.phone,
    text: command.text,
    sender: command.sender ?? deps.defaultSender,
    customId: command.customId,
    ...caller,
  };
  const id = await insertRefusedMessage(deps.db, message, error, 'enterprise_not_allowed');
  deps.logger.warn(
    { enterprise: command.enterpriseNumber, phone: maskPhone(command.phone), service: caller.serviceName, ip: caller.requestIp, messageId: id },
    'caller not allowed to send for this enterprise; answered as not found',
  );
  return { httpStatus: 404, body: errorEnvelope(error, { custom_id: command.customId, id, status: 'failed' }) };
}

/**
 * The Idempotency-Key names message `id`: answer as for the first request, and send nothing. Still on
 * its way: wait for it like the first request did (bounded), then answer from the row (200 or 202).
 * A lost enqueue (the first API process died) is the sweeper's to repair, as for any pending row.
 */
async function answerRepeat(deps: AcceptDeps, id: number, sameRequest: boolean, wantsToWait: boolean): Promise<SendAnswer> {
  if (!sameRequest) {
    return { httpStatus: 422, body: { ...errorEnvelope(KEY_REUSED_MESSAGE), errors: [{ field: IDEMPOTENCY_HEADER, message: KEY_REUSED_MESSAGE }] } };
  }
  const replayed = (answer: SendAnswer): SendAnswer => ({ ...answer, headers: { ...answer.headers, 'Idempotent-Replayed': 'true' } });
  // The first answer, and the link in it, may never have reached the caller: this one carries a new
  // link. Earlier links keep working (a few of them: STATUS_KEYS_KEPT).
  const statusKey = newStatusKey();
  await addStatusKeyHash(deps.db, id, statusKey.sha256, STATUS_KEYS_KEPT);
  const link = statusUrl(id, statusKey.key);
  // Registered before the row is read, so a completion in between is not missed.
  const wait = wantsToWait && deps.sendWaitMs > 0 ? deps.waitForJob(id, deps.sendWaitMs) : undefined;
  const now = await answerFromRow(deps, id, link).catch((error: unknown) => {
    wait?.cancel();
    throw error;
  });
  if (!wait || now.httpStatus !== 202) {
    wait?.cancel();
    return replayed(now);
  }
  await wait.finished;
  return replayed(await answerFromRow(deps, id, link));
}

/** The row as it stands: final → 200 with its result; otherwise 202 with when it should go out. */
export async function answerFromRow(deps: Pick<AcceptDeps, 'db' | 'standing'>, id: number, link: string): Promise<SendAnswer> {
  const record = await findMessage(deps.db, id);
  if (!record) throw new Error(`message ${id} vanished`);
  if (isFinal(record.status)) return finalAnswer(record.id, record.customId, recordOutcome(record), link);
  return { httpStatus: 202, body: queuedEnvelope(record, await expectedSendAt(deps, record), link) };
}

function finalAnswer(id: number, customId: string | null, outcome: DeliveryOutcome, link: string): SendAnswer {
  // A WebSMS refusal is still a 200 with success:false, as the old service answered.
  return { httpStatus: 200, body: outcomeEnvelope(id, customId, outcome, link) };
}

async function expectedSendAt(deps: Pick<AcceptDeps, 'standing'>, record: MessageRecord): Promise<Date> {
  return (await deps.standing(record)).expectedSendAt ?? new Date();
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
    closed = await recordNeverQueued(deps.db, id, { code: 'queue_unavailable', message: text });
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
