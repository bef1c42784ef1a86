import { Router, type Request } from 'express';
import type { z } from 'zod';
import { acceptMessage, refuseEnterpriseNotAllowed, type AcceptDeps, type SendCommand } from '../messages/accept.ts';
import { IDEMPOTENCY_HEADER, parseIdempotencyKey } from '../messages/idempotency.ts';
import { HttpError } from './errors.ts';
import { authenticatedCaller, mayUseEnterprise } from './caller.ts';
import { callerOf } from './client-info.ts';
import { normalisePhone, PHONE_ERROR, sendRequestSchema } from './schemas.ts';
import { callbackHostProblem } from '../callbacks/callback-hosts.ts';
import { sendPhase } from '../metrics/send-phases.ts';

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
    const idempotency = parseIdempotencyKey(req.headersDistinct['idempotency-key']);
    if (!idempotency.ok) {
      throw new HttpError(422, `Invalid request: ${IDEMPOTENCY_HEADER} ${idempotency.problem}`, { errors: [{ field: IDEMPOTENCY_HEADER, message: idempotency.problem }] });
    }
    // The request's own callback_url, else its token's. Its host must be allowed now, before anything
    // is recorded; delivery checks it again (src/callbacks/callback-sender.ts).
    const callbackUrl = parsed.data.callback_url ?? authenticatedCaller(res)?.callbackUrl ?? null;
    const hostProblem = callbackUrl === null ? undefined : callbackHostProblem(callbackUrl, deps.callbackHosts ?? []);
    if (hostProblem) throw new HttpError(422, `Invalid request: callback_url ${hostProblem}`, { errors: [{ field: 'callback_url', message: hostProblem }] });

    const command: SendCommand = {
      enterpriseNumber: parsed.data.enterprise_number,
      phone,
      text: parsed.data.text,
      sender: parsed.data.sender ?? null,
      customId: parsed.data.custom_id ?? null,
      wait: wantsToWait(req),
      idempotencyKey: idempotency.key,
      callbackUrl,
    };
    // With API_TOKENS, the token names the caller; X-Service-Name is only a claim. A caller named
    // neither way gets DEFAULT_SERVICE_NAME, on every row including refusals: the old service
    // recorded 'user_api_endpoint' for every send.
    sendPhase({ phase: 'validated', command, request: req });
    const client = callerOf(req);
    const caller = { ...client, serviceName: authenticatedCaller(res)?.name ?? client.serviceName ?? deps.defaultServiceName };
    const answer = mayUseEnterprise(res, command.enterpriseNumber)
      ? await acceptMessage(deps, command, caller)
      : await refuseEnterpriseNotAllowed(deps, command, caller);
    if (answer.headers) res.set(answer.headers);
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
