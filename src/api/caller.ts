import type { Response } from 'express';
import { accessOf } from './access.ts';

/**
 * The authenticated caller of a request, when caller authentication is configured (API_TOKENS).
 * `enterprises: 'all'` or the set of enterprise numbers this caller may act for.
 */
export interface ApiCaller {
  name: string;
  enterprises: 'all' | ReadonlySet<string>;
  /** the callback_url of this caller's messages that name none (API_TOKENS' optional fourth field) */
  callbackUrl?: string;
}

/** Set by the authentication middleware (access.ts); absent when no valid token was presented. */
export function authenticatedCaller(res: Response): ApiCaller | undefined {
  return accessOf(res).caller;
}

function callerMay(caller: ApiCaller, enterpriseNumber: string): boolean {
  return caller.enterprises === 'all' || caller.enterprises.has(enterpriseNumber);
}

/**
 * Whether this request may send for an enterprise. Without API_TOKENS anyone may (the old service's
 * contract; access.ts makes sure a token is there when they are on). A caller limited to other
 * enterprises gets the same 404 as for an unknown enterprise, so enterprise numbers cannot be probed.
 */
export function mayUseEnterprise(res: Response, enterpriseNumber: string): boolean {
  const caller = authenticatedCaller(res);
  return !caller || callerMay(caller, enterpriseNumber);
}

/** Whether this request may read an enterprise's data: the operator, or a token allowed that enterprise. */
export function mayReadEnterprise(res: Response, enterpriseNumber: string): boolean {
  const { operator, caller } = accessOf(res);
  return operator !== undefined || (caller !== undefined && callerMay(caller, enterpriseNumber));
}
