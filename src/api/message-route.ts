import { Router, type Request, type Response } from 'express';
import type { Db } from '../db/database.ts';
import { maskPhone, type Logger } from '../logger.ts';
import { errorEnvelope, isFinal, type MessageRecord } from '../messages/message.ts';
import { findMessage } from '../messages/repository.ts';
import { statusKeyMatches } from '../messages/status-key.ts';
import type { ActionResult } from '../queue/inspection.ts';
import type { MessageStanding } from '../line/standing.ts';
import { accessOf, clientKey, countFailure, throttleSays, tooManyFailures } from './access.ts';
import { mayReadEnterprise } from './caller.ts';
import type { CredentialThrottle } from './credential-throttle.ts';
import { HttpError } from './errors.ts';

export interface MessageRouteDeps {
  db: Db;
  logger: Logger;
  /** the cancel use case (queue/inspection.ts), `by` recorded in operator_actions */
  cancel(messageId: number, by: string): Promise<ActionResult>;
  throttle?: CredentialThrottle | undefined;
  /** where an unfinished message stands in its enterprise's line now (src/line/standing.ts) */
  standing?: ((record: MessageRecord) => Promise<MessageStanding>) | undefined;
}

/**
 * `GET` and `DELETE /messages/{id}`: one message's state, and its cancel. Allowed with the message's
 * status key (`?key=`, from the status_url of the send's answer), a token allowed its enterprise, or
 * the operator. Anyone else gets the 404 of a message that does not exist: ids are sequential, and
 * must not tell which messages exist. Wrong keys count as failed credentials (access.ts).
 */
export function messageRoute(deps: MessageRouteDeps): Router {
  const router = Router();

  router.get('/messages/:id', async (req, res) => {
    const record = await authorisedMessage(deps, req, res);
    res.json(messageJson(record, await deps.standing?.(record)));
  });

  router.delete('/messages/:id', async (req, res) => {
    const record = await authorisedMessage(deps, req, res);
    const result = await deps.cancel(record.id, cancelledBy(res));
    const now = (await findMessage(deps.db, record.id)) ?? record;
    if (result.kind === 'done') {
      deps.logger.info({ messageId: record.id, enterprise: record.enterpriseNumber, by: cancelledBy(res) }, 'message cancelled');
      res.json(messageJson(now));
      return;
    }
    const reason = result.kind === 'refused' ? result.reason : `it is ${now.status}`;
    const text = `Message ${record.id} cannot be cancelled: ${reason}`;
    res.status(409).json({ ...errorEnvelope(text), id: now.id, status: now.status, message: messageJson(now) });
  });

  return router;
}

async function authorisedMessage(deps: MessageRouteDeps, req: Request, res: Response): Promise<MessageRecord> {
  const raw = req.params.id ?? '';
  if (!/^[1-9]\d{0,15}$/.test(String(raw))) throw new HttpError(400, 'Message id must be a positive integer', { errors: [{ field: 'id', message: 'must be a positive integer' }] });
  const notFound = new HttpError(404, `Message ${String(raw)} not found`);
  const presented = req.query.key;
  const key = typeof presented === 'string' ? presented : undefined;
  const client = clientKey(req);
  if (presented !== undefined && deps.throttle && (await throttleSays(deps.throttle, client, deps.logger, res))) throw tooManyFailures(res);
  const record = await findMessage(deps.db, Number(raw));
  if (record && mayReadEnterprise(res, record.enterpriseNumber)) return record;
  if (record && key !== undefined && statusKeyMatches(record.statusKeyHashes, key)) return record;
  if (presented !== undefined) await countFailure(deps.throttle, client, deps.logger);
  throw notFound;
}

/** Who cancelled, for operator_actions: never the key itself. */
function cancelledBy(res: Response): string {
  const { operator, caller } = accessOf(res);
  if (operator) return `operator ${operator}`;
  if (caller) return `token ${caller.name}`;
  return 'caller (status link)';
}

/** `standing`: the message's place in its line now; without it, the row's own `not_before`. */
function messageJson(record: MessageRecord, standing?: MessageStanding) {
  const expectedSendAt = standing ? standing.expectedSendAt : !isFinal(record.status) ? record.notBefore : null;
  return {
    id: record.id,
    enterprise_number: record.enterpriseNumber,
    enterprise_name: record.enterpriseName,
    phone: maskPhone(record.phone),
    sender: record.sender,
    custom_id: record.customId,
    status: record.status,
    message_id: record.websmsMessageId,
    price: record.price,
    parts: record.parts,
    amount: record.amount,
    error: record.error,
    error_code: record.errorCode,
    attempts: record.attempts,
    created_at: record.createdAt?.toISOString() ?? null,
    sent_at: record.sentAt?.toISOString() ?? null,
    updated_at: record.updatedAt.toISOString(),
    resent_after_unknown: record.resentAfterUnknown,
    expected_send_at: expectedSendAt?.toISOString() ?? null,
    position: standing?.position ?? null,
    delivery_status: record.deliveryStatus,
    delivered_at: record.deliveredAt?.toISOString() ?? null,
  };
}
