import { Router } from 'express';
import type { Db } from '../db/database.ts';
import { maskPhone } from '../logger.ts';
import { isFinal } from '../messages/message.ts';
import { findMessage } from '../messages/repository.ts';
import { mayUseEnterprise } from './caller.ts';
import { HttpError } from './errors.ts';

export function messageRoute(db: Db): Router {
  const router = Router();
  router.get('/messages/:id', async (req, res) => {
    const raw = req.params.id ?? '';
    if (!/^[1-9]\d{0,15}$/.test(raw)) throw new HttpError(400, 'Message id must be a positive integer', { errors: [{ field: 'id', message: 'must be a positive integer' }] });
    const record = await findMessage(db, Number(raw));
    // Another enterprise's message looks exactly like a missing one (API_TOKENS scopes).
    if (!record || !mayUseEnterprise(res, record.enterpriseNumber)) throw new HttpError(404, `Message ${raw} not found`);
    res.json({
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
      expected_send_at: !isFinal(record.status) && record.notBefore ? record.notBefore.toISOString() : null,
    });
  });
  return router;
}
