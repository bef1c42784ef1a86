import { Router } from 'express';
import type { BalanceCache } from '../balance-watch/balance-cache.ts';
import { balanceFields, checkEnterpriseBalance, roundAmount, type BalanceCheck, type BalancePorts } from '../enterprises/balance.ts';
import { canSend, findEnterprise, notFoundMessage, type Enterprise } from '../enterprises/repository.ts';
import { accessOf } from './access.ts';
import { mayReadEnterprise } from './caller.ts';
import { HttpError } from './errors.ts';

export interface BalanceRouteDeps extends BalancePorts {
  /** The balance watch's cache; undefined: every answer asks WebSMS. */
  cache?: BalanceCache | undefined;
  now?: () => number;
}

/**
 * `GET /enterprises/{number}/balance`, for operators and tokens allowed the enterprise (app.ts mounts
 * the guard). The same rule as `POST /send`: an unknown, unconfigured or inactive enterprise, or one
 * the caller may not act for, is a 404. The answer comes from the balance watch's cache, with its age
 * (`refreshed_at`, `age_s`); `?fresh=true`, or no cached balance yet, asks WebSMS now (and refreshes
 * the cache). A WebSMS refusal or timeout is then a 502: the gateway behind us failed, not the
 * request. The WebSMS login (an e-mail) is the operators' to see, not the callers'.
 */
export function balanceRoute(deps: BalanceRouteDeps): Router {
  const now = deps.now ?? Date.now;
  const router = Router();
  router.get('/enterprises/:number/balance', async (req, res) => {
    const number = req.params.number ?? '';
    if (number.length < 1 || number.length > 10) {
      throw new HttpError(400, 'Enterprise number must be 1-10 characters', { errors: [{ field: 'number', message: 'must be 1-10 characters' }] });
    }
    if (!mayReadEnterprise(res, number)) throw new HttpError(404, notFoundMessage(number));
    const fresh = parseFresh(req.query.fresh);
    const enterprise = await findEnterprise(deps.db, number);
    if (!canSend(enterprise)) throw new HttpError(404, notFoundMessage(number));

    // Redis away: the answer asks WebSMS, as it did before there was a cache.
    const cached = fresh || !deps.cache ? undefined : await deps.cache.get(number).catch(() => undefined);
    let check: Extract<BalanceCheck, { kind: 'ok' }>;
    let refreshedAtMs: number;
    if (cached?.refreshedAtMs !== undefined) {
      check = fromCache(enterprise, { sms: cached.sms ?? 0, viber: cached.viber ?? 0 });
      refreshedAtMs = cached.refreshedAtMs;
    } else {
      const answer = await checkEnterpriseBalance(deps, enterprise);
      refreshedAtMs = now();
      if (answer.kind === 'not-configured') throw new HttpError(404, notFoundMessage(number));
      if (answer.kind === 'websms-error') {
        await deps.cache?.recordFailure(number, refreshedAtMs).catch(() => undefined);
        throw new HttpError(502, `WebSMS balance check failed for enterprise ${number}: ${answer.message}`, { error_code: answer.code });
      }
      check = answer;
      await deps.cache?.recordBalance(number, { sms: check.sms, viber: check.viber }, refreshedAtMs).catch(() => undefined);
    }
    const { websms_user: _websmsUser, ...forCallers } = balanceFields(check);
    res.json({
      ...(accessOf(res).operator ? balanceFields(check) : forCallers),
      refreshed_at: new Date(refreshedAtMs).toISOString(),
      age_s: Math.max(0, Math.round((now() - refreshedAtMs) / 1_000)),
      cached: cached?.refreshedAtMs !== undefined,
    });
  });
  return router;
}

function parseFresh(value: unknown): boolean {
  if (value === undefined || value === 'false' || value === '0') return false;
  if (value === 'true' || value === '1' || value === '') return true;
  throw new HttpError(400, 'fresh must be true or false', { errors: [{ field: 'fresh', message: 'must be true or false' }] });
}

function fromCache(enterprise: Enterprise & { credentials: { user: string } }, cached: { sms: number; viber: number }): Extract<BalanceCheck, { kind: 'ok' }> {
  return {
    kind: 'ok',
    enterpriseNumber: enterprise.number,
    enterpriseName: enterprise.name,
    websmsUser: enterprise.credentials.user,
    active: enterprise.active,
    sms: cached.sms,
    viber: cached.viber,
    total: roundAmount(cached.sms + cached.viber),
  };
}
