import type { RequestHandler } from 'express';
import type { RedisClient } from '../redis-connection.ts';
import type { Logger } from '../logger.ts';
import { isOpenPath } from './auth.ts';
import { accessOf } from './access.ts';
import { callerOf } from './client-info.ts';
import { HttpError } from './errors.ts';

// The per-caller HTTP request limit (REQUEST_RATE_LIMIT_PER_WINDOW): abuse protection for the API
// itself, shared by every API process through Redis. Not the per-enterprise SMS limit (limiter/),
// which is exact and sits in front of WebSMS; this one only has to stop a runaway client.
//
// A fixed window: INCR, and PEXPIRE when the count starts. Cheap (one round trip, one small key per
// caller that expires on its own), at the cost of letting up to twice the limit through across a
// window boundary, which is fine for a flood guard.

const SCRIPT = `
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}`;

export interface RequestRateOptions {
  /** keys are `${keyPrefix}:http-rate:<caller>` */
  keyPrefix: string;
  /** requests per window per caller */
  limit: number;
  windowMs: number;
}

export type RateDecision = { allowed: true } | { allowed: false; retryAfterMs: number };

export interface RequestRateLimiter {
  /** Counts one request for `caller`. Redis errors propagate; the middleware decides what they mean. */
  hit(caller: string): Promise<RateDecision>;
}

/** Counts one event in `key`'s fixed window: the count so far and the ms until the window ends. */
export async function countInFixedWindow(redis: RedisClient, key: string, windowMs: number): Promise<{ count: number; ttlMs: number }> {
  const reply = await redis.eval(SCRIPT, 1, key, windowMs);
  if (!Array.isArray(reply) || typeof reply[0] !== 'number' || typeof reply[1] !== 'number') {
    throw new Error(`fixed-window counter: unexpected reply from Redis: ${JSON.stringify(reply)}`);
  }
  const [count, ttlMs] = reply as [number, number];
  return { count, ttlMs };
}

export function checkWindowOptions(limit: number, windowMs: number): void {
  if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${limit}`);
  if (!Number.isSafeInteger(windowMs) || windowMs < 1) throw new RangeError(`windowMs must be a positive integer, got ${windowMs}`);
}

export function createRequestRateLimiter(redis: RedisClient, options: RequestRateOptions): RequestRateLimiter {
  const { keyPrefix, limit, windowMs } = options;
  checkWindowOptions(limit, windowMs);
  return {
    async hit(caller) {
      const { count, ttlMs } = await countInFixedWindow(redis, `${keyPrefix}:http-rate:${caller}`, windowMs);
      return count <= limit ? { allowed: true } : { allowed: false, retryAfterMs: Math.max(1, ttlMs) };
    },
  };
}

/** After this long without a Redis error, the next one is logged again. */
const FAIL_OPEN_LOG_INTERVAL_MS = 10_000;

/**
 * 429 with Retry-After once a caller (the token's name, else the client address) is over the limit.
 * Fails open: when Redis does not answer, the request goes on, with a log line (at most one per 10 s).
 * Sends need Redis anyway and answer 503 on their own; reads do not, and should not go dark because
 * a guard's counter is unavailable.
 */
export function requestRateLimit(limiter: RequestRateLimiter, logger: Logger): RequestHandler {
  let lastLoggedAt = 0;
  return async (req, res, next) => {
    if (isOpenPath(req.path)) return next();
    const caller = accessOf(res).caller;
    const key = caller ? `token:${caller.name}` : `ip:${callerOf(req).requestIp ?? 'unknown'}`;
    let decision: RateDecision;
    try {
      decision = await limiter.hit(key);
    } catch (error) {
      if (Date.now() - lastLoggedAt > FAIL_OPEN_LOG_INTERVAL_MS) {
        lastLoggedAt = Date.now();
        logger.warn({ err: error instanceof Error ? error.message : String(error) }, 'request rate limit unavailable (Redis); letting requests through');
      }
      return next();
    }
    if (decision.allowed) return next();
    const retryAfterS = Math.ceil(decision.retryAfterMs / 1000);
    res.setHeader('Retry-After', String(retryAfterS));
    next(new HttpError(429, `Too many requests: retry after ${retryAfterS} s`));
  };
}
