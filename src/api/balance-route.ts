import { Router } from 'express';
import { balanceFields, checkBalance, type BalancePorts } from '../enterprises/balance.ts';
import { notFoundMessage } from '../enterprises/repository.ts';
import { mayUseEnterprise } from './caller.ts';
import { HttpError } from './errors.ts';

/**
 * `GET /enterprises/{number}/balance` for the CRM. The same rule as `POST /send`: an unknown,
 * unconfigured or inactive enterprise, or one the caller may not act for, is a 404. A WebSMS
 * refusal or timeout is a 502: the gateway behind us failed, not the request.
 */
export function balanceRoute(ports: BalancePorts): Router {
  const router = Router();
  router.get('/enterprises/:number/balance', async (req, res) => {
    const number = req.params.number ?? '';
    if (number.length < 1 || number.length > 10) {
      throw new HttpError(400, 'Enterprise number must be 1-10 characters', { errors: [{ field: 'number', message: 'must be 1-10 characters' }] });
    }
    if (!mayUseEnterprise(res, number)) throw new HttpError(404, notFoundMessage(number));
    const check = await checkBalance(ports, number, { activeOnly: true });
    switch (check.kind) {
      case 'not-configured':
        throw new HttpError(404, notFoundMessage(number));
      case 'websms-error':
        throw new HttpError(502, `WebSMS balance check failed for enterprise ${number}: ${check.message}`, { error_code: check.code });
      case 'ok':
        res.json(balanceFields(check));
    }
  });
  return router;
}
