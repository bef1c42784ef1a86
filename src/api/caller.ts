import type { Response } from 'express';

/**
 * The authenticated caller of a request, when caller authentication is configured (API_TOKENS).
 * `enterprises: 'all'` or the set of enterprise numbers this caller may act for.
 */
export interface ApiCaller {
  name: string;
  enterprises: 'all' | ReadonlySet<string>;
}

/** Set by the authentication middleware; absent when authentication is off. */
export function authenticatedCaller(res: Response): ApiCaller | undefined {
  return (res.locals as { caller?: ApiCaller }).caller;
}

/**
 * Whether this request may see or act for an enterprise. A caller limited to other enterprises
 * gets the same 404 as for an unknown enterprise, so enterprise numbers cannot be probed.
 */
export function mayUseEnterprise(res: Response, enterpriseNumber: string): boolean {
  const caller = authenticatedCaller(res);
  return !caller || caller.enterprises === 'all' || caller.enterprises.has(enterpriseNumber);
}
