import { Router } from 'express';
import { balanceFields, checkBalance, type BalancePorts } from '../enterprises/balance.ts';
import { notFoundMessage } from '../enterprises/repository.ts';
import { accessOf } from './access.ts';
import { mayReadEnterprise } from './caller.ts';
import { HttpError } from './errors.ts';

/**
 * `GET /enterprises/{number}/balance`, for operators and tokens allowed the enterprise (app.ts mounts
 * the guard). The same rule as `POST /send`: an unknown, unconfigured or inactive enterprise, or one
 * the caller may not act for, is a 404. A WebSMS refusal or timeout is a 502: the gateway behind us
 * failed, not the request. The WebSMS login (an e-mail) is the operators' to see, not the callers'.
 */
export function balanceRoute(ports: BalancePorts): Router {
  const router = Router();
  router.get('/enterprises/:number/balance', async (req, res) => {
    const number = req.params.number ?? '';
    if (number.length < 1 || number.length > 10) {
      throw new HttpError(400, 'Enterprise number must be 1-10 characters', { errors: [{ field: 'number', message: 'must be 1-10 characters' }] });
    }
    if (!mayReadEnterprise(res, number)) throw new HttpError(404, notFoundMessage(number));
    const check = await checkBalance(ports, number, { activeOnly: true });
    switch (check.kind) {
      case 'not-configured':
        throw new HttpError(404, notFoundMessage(number));
      case 'websms-error':
        throw new HttpError(502, `WebSMS balance check failed for enterprise ${number}: ${check.message}`, { error_code: check.code });
      case 'ok': {
        const all = balanceFields(check);
        const { websms_user: _websmsUser, ...forCallers } = all;
        res.json(accessOf(res).operator ? all : forCallers);
      }
    }
  });
  return router;
}
