import type { Request, RequestHandler, Response } from 'express';
import type { Logger } from '../logger.ts';
import { safeEqual, type AdminCredentials } from './admin-auth.ts';
import { findToken, isOpenPath, type ApiToken } from './auth.ts';
import type { ApiCaller } from './caller.ts';
import { callerOf } from './client-info.ts';
import type { CredentialThrottle } from './credential-throttle.ts';
import { HttpError } from './errors.ts';

// Who may reach what. Closed by default: anonymously, only the old service's surface (open paths in
// auth.ts, and POST /send unless API_TOKENS is on). Everything else needs one of:
// - an API token (API_TOKENS), for the enterprises it names;
// - the operator: HTTP Basic with ADMIN_USER/ADMIN_PASSWORD, or, when those are not configured, a
//   direct local peer (see isDirectLocalPeer) — `curl 127.0.0.1:8014/metrics` on the host works
//   without any setting, while nothing that came through a proxy or from another host does;
// - for one message, its status key (checked in message-route.ts; messages/status-key.ts).
// Bad credentials of any kind are counted per client address; past a few a minute the client gets
// 429 before its credentials are even looked at (credential-throttle.ts).

export interface Access {
  /** the API token's caller */
  caller?: ApiCaller;
  /** the operator's name: ADMIN_USER, or `local` for a direct local peer without configured credentials */
  operator?: string;
  /** credentials were presented and are wrong (401), or the client failed too often (429) */
  rejection?: HttpError;
}

export interface AccessPolicy {
  /** API_TOKENS; undefined: no tokens, POST /send is anonymous */
  apiTokens?: readonly ApiToken[] | undefined;
  /** ADMIN_USER/ADMIN_PASSWORD; undefined: operators are direct local peers */
  admin?: AdminCredentials | undefined;
  /** undefined: bad credentials are not counted */
  throttle?: CredentialThrottle | undefined;
  logger: Logger;
}

const BEARER = /^Bearer +([\x21-\x7E]+) *$/i;
const BASIC = /^Basic\s+([A-Za-z0-9+/=]*)\s*$/i;
const BEARER_REALM = 'Bearer realm="user-sms"';
const BASIC_REALM = 'Basic realm="user-sms operators", charset="UTF-8"';

export function accessOf(res: Response): Access {
  const locals = res.locals as { access?: Access };
  locals.access ??= {};
  return locals.access;
}

/** The client a failed credential is counted against: the address (behind nginx, the real client's). */
export function clientKey(req: Request): string {
  return callerOf(req).requestIp ?? 'unknown';
}

/**
 * Headers any proxy in front of the service sets. A request carrying one was relayed, so its peer
 * address says nothing about the client: it is not local, whatever the peer is.
 */
const PROXY_HEADERS = ['x-forwarded-for', 'x-real-ip', 'forwarded', 'via', 'x-forwarded-host', 'x-forwarded-proto'];

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|::ffff:127\.\d{1,3}\.\d{1,3}\.\d{1,3})$/i;

/** A client on this host talking to the service itself: a loopback peer, and no sign of a proxy. */
export function isDirectLocalPeer(peerAddress: string | undefined, headers: Request['headers']): boolean {
  if (!peerAddress || !LOOPBACK.test(peerAddress)) return false;
  return PROXY_HEADERS.every((name) => headers[name] === undefined);
}

/**
 * Reads the credentials a request carries, before any body: res.locals.access. Credentials that are
 * presented and wrong are noted for `rejectBadCredentials` (401, or 429 once the client has failed
 * too often), which runs after the request rate limit so that those requests count too; missing ones
 * are left to the route, which knows whether it needs any. Open paths are not looked at at all.
 */
export function identify(policy: AccessPolicy): RequestHandler {
  const { apiTokens, admin, throttle, logger } = policy;
  return async (req, res, next) => {
    if (isOpenPath(req.path)) return next();
    const access = accessOf(res);
    if (!admin && isDirectLocalPeer(req.socket.remoteAddress, req.headers)) access.operator = 'local';
    const authorization = req.get('authorization') ?? '';
    const bearer = apiTokens ? BEARER.exec(authorization) : null;
    const basic = admin ? BASIC.exec(authorization) : null;
    if (!bearer && !basic) return next();

    const client = clientKey(req);
    if (throttle && (await throttleSays(throttle, client, logger, res))) {
      access.rejection = tooManyFailures(res);
      return next();
    }
    if (bearer) {
      const token = findToken(apiTokens!, bearer[1]!);
      if (token) {
        access.caller = { name: token.name, enterprises: token.enterprises, ...(token.callbackUrl === undefined ? {} : { callbackUrl: token.callbackUrl }) };
        return next();
      }
    } else {
      const operator = checkBasic(admin!, basic![1]!);
      if (operator) {
        access.operator = operator;
        return next();
      }
    }
    await countFailure(throttle, client, logger);
    logger.warn({ ip: client, path: req.path, scheme: bearer ? 'bearer' : 'basic' }, 'invalid credentials');
    access.rejection = bearer ? unauthorized(res, 'bearer', 'Invalid API token') : unauthorized(res, 'basic', 'Invalid operator credentials');
    next();
  };
}

/** Ends a request whose credentials were wrong (see identify). */
export const rejectBadCredentials: RequestHandler = (_req, res, next) => {
  next(accessOf(res).rejection);
};

/** The operator's name when the Basic credentials are right. Both parts are always compared. */
function checkBasic(admin: AdminCredentials, encoded: string): string | undefined {
  const decoded = Buffer.from(encoded, 'base64').toString('utf8');
  const separator = decoded.indexOf(':');
  const user = separator >= 0 ? decoded.slice(0, separator) : '';
  const password = separator >= 0 ? decoded.slice(separator + 1) : '';
  const userOk = safeEqual(user, admin.user);
  const passwordOk = safeEqual(password, admin.password);
  return separator >= 0 && userOk && passwordOk ? admin.user : undefined;
}

/** POST /send: anonymous unless API_TOKENS is on, then a token is needed. */
export function requireCallerWhenTokens(policy: Pick<AccessPolicy, 'apiTokens'>): RequestHandler {
  return (_req, res, next) => {
    if (!policy.apiTokens || accessOf(res).caller) return next();
    next(unauthorized(res, 'bearer', 'Authentication required: send Authorization: Bearer <token>'));
  };
}

/**
 * Operator surfaces. With operator credentials configured, a request without them is asked for them
 * (401 and a Basic challenge, so that a browser prompts). Without, only a direct local peer gets in,
 * and everyone else finds nothing here (404), as for a path that does not exist.
 * `orCaller`: an API token may do too (the route then limits it to its enterprises).
 */
export function requireOperator(policy: Pick<AccessPolicy, 'admin' | 'apiTokens'>, options: { orCaller?: boolean } = {}): RequestHandler {
  return (req, res, next) => {
    const access = accessOf(res);
    if (access.operator || (options.orCaller && access.caller)) return next();
    if (policy.admin) return next(unauthorized(res, 'basic', 'Operator credentials required'));
    if (options.orCaller && policy.apiTokens) return next(unauthorized(res, 'bearer', 'Authentication required: send Authorization: Bearer <token>'));
    next(new HttpError(404, `Not found: ${req.method} ${req.path}`));
  };
}

function unauthorized(res: Response, scheme: 'bearer' | 'basic', message: string): HttpError {
  // RFC 6750: no error code when no token was sent; invalid_token when it was wrong.
  const challenge = scheme === 'basic' ? BASIC_REALM : message.startsWith('Invalid') ? `${BEARER_REALM}, error="invalid_token"` : BEARER_REALM;
  res.setHeader('WWW-Authenticate', challenge);
  return new HttpError(401, message, { errors: [{ field: 'Authorization', message }] });
}

/** 429 for a client past its failed credentials; throttleSays has set Retry-After. */
export function tooManyFailures(res: Response): HttpError {
  return new HttpError(429, `Too many failed credentials from this client: retry after ${res.getHeader('Retry-After') as string} s`);
}

/** true: the client is over its failures and has been told when to come back (Retry-After). */
export async function throttleSays(throttle: CredentialThrottle, client: string, logger: Logger, res: Response): Promise<boolean> {
  try {
    const retryAfterMs = await throttle.blockedForMs(client);
    if (retryAfterMs <= 0) return false;
    res.setHeader('Retry-After', String(Math.ceil(retryAfterMs / 1000)));
    return true;
  } catch (error) {
    logThrottleDown(logger, error);
    return false;
  }
}

export async function countFailure(throttle: CredentialThrottle | undefined, client: string, logger: Logger): Promise<void> {
  if (!throttle) return;
  try {
    await throttle.failed(client);
  } catch (error) {
    logThrottleDown(logger, error);
  }
}

/** Fails open: the credentials themselves are still checked; only the counting is lost while Redis is away. */
function logThrottleDown(logger: Logger, error: unknown): void {
  logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'failed-credential throttle unavailable (Redis)');
}
