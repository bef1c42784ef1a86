import { Router, type Request } from 'express';
import type { z } from 'zod';
import { acceptMessage, type AcceptDeps } from '../messages/accept.ts';
import { HttpError } from './errors.ts';
import { callerOf } from './client-info.ts';
import { normalisePhone, PHONE_ERROR, sendRequestSchema } from './schemas.ts';

export function sendRoute(deps: AcceptDeps): Router {
  const router = Router();
  router.post('/send', async (req, res) => {
    if (!req.is('application/json')) {
      throw new HttpError(415, 'Content-Type must be application/json', { errors: [{ field: 'Content-Type', message: 'must be application/json' }] });
    }
    const parsed = sendRequestSchema.safeParse(req.body);
    if (!parsed.success) throw invalidRequest(parsed.error);
    const phone = normalisePhone(parsed.data.phone);
    if (!phone) throw new HttpError(400, PHONE_ERROR, { errors: [{ field: 'phone', message: PHONE_ERROR }] });

    const answer = await acceptMessage(
      deps,
      {
        enterpriseNumber: parsed.data.enterprise_number,
        phone,
        text: parsed.data.text,
        sender: parsed.data.sender ?? null,
        customId: parsed.data.custom_id ?? null,
        wait: wantsToWait(req),
      },
      callerOf(req),
    );
    res.status(answer.httpStatus).json(answer.body);
  });
  return router;
}

/** `?wait=false` or `Prefer: respond-async` (RFC 7240): answer 202 at once. */
function wantsToWait(req: Request): boolean {
  const wait = req.query.wait;
  if (wait === 'false' || wait === '0') return false;
  return !/\brespond-async\b/i.test(req.get('prefer') ?? '');
}

/** 422 naming every offending field, in one sentence a person can read. */
function invalidRequest(error: z.ZodError): HttpError {
  const errors = error.issues.map((issue) => ({
    field: issue.path.length > 0 ? issue.path.join('.') : 'body',
    message: issue.code === 'invalid_type' && issue.input === undefined ? 'is required' : issue.message,
  }));
  const text = `Invalid request: ${errors.map((e) => `${e.field} ${e.message}`).join('; ')}`;
  return new HttpError(422, text, { errors });
}
