// The per-enterprise send limit (design decision 5): at most `limit` grants in any rolling window, enforced
// by one Lua script in Redis so that every worker process on every machine shares one count and one clock.
//
// Glossary
// - grant: permission for one send attempt, recorded in Redis at the moment it is given. Attempts count,
//   not delivered messages, because WebSMS counts attempts.
// - token: the caller's unique id for one send attempt; it is the sorted-set member, so it must not be reused.
// - window: half-open. No interval [t, t + window) ever holds more than `limit` grants, i.e. for grant
//   times sorted ascending, times[i + limit] - times[i] >= window.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';

export interface RollingWindowOptions {
  /** Keys are `${keyPrefix}:rate:${enterpriseNumber}`. */
  keyPrefix: string;
  /** Grants allowed per window, per enterprise. */
  limit: number;
  windowMs: number;
  /**
   * Added to the window. The grant is taken a few ms before WebSMS receives the request, and the delay
   * between the two varies (event loop, TLS, network). Two sends granted exactly `windowMs` apart can
   * therefore arrive at WebSMS less than `windowMs` apart and be rejected there; widening our window
   * by more than that jitter keeps the provider's view of the spacing at or above its limit.
   */
  marginMs?: number;
}

/** `grantedAt` is in ms on Redis's clock. After a denial, `retryInMs` is when a slot frees (if nobody else takes it). */
export type SlotDecision = { granted: true; grantedAt: number } | { granted: false; retryInMs: number };

export interface RollingWindowLimiter {
  /** Takes a slot for this send attempt if one is free. Redis errors propagate: no Redis, no slot. */
  acquire(enterpriseNumber: string, token: string): Promise<SlotDecision>;
  /** ms until the enterprise could next send (0 if a slot is free now), without taking a slot; used to tell a caller when a queued message is expected to go out */
  peekWaitMs(enterpriseNumber: string): Promise<number>;
}

const script = readFileSync(new URL('./rolling-window.lua', import.meta.url), 'utf8');
const scriptSha = createHash('sha1').update(script).digest('hex');

export function createRollingWindowLimiter(redis: Redis, options: RollingWindowOptions): RollingWindowLimiter {
  const { keyPrefix, limit, windowMs, marginMs = 0 } = options;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${limit}`);
  if (!Number.isSafeInteger(windowMs) || windowMs < 1) throw new RangeError(`windowMs must be a positive integer, got ${windowMs}`);
  if (!Number.isSafeInteger(marginMs) || marginMs < 0) throw new RangeError(`marginMs must be a non-negative integer, got ${marginMs}`);
  const effectiveWindowMs = windowMs + marginMs;

  const keyFor = (enterpriseNumber: string): string => `${keyPrefix}:rate:${enterpriseNumber}`;

  // EVALSHA first; a Redis that has not seen the script yet (new server, restart, SCRIPT FLUSH) answers
  // NOSCRIPT, and EVAL then runs it and caches it for the next call.
  async function run(enterpriseNumber: string, token?: string): Promise<[granted: boolean, value: number]> {
    const args = [keyFor(enterpriseNumber), limit, effectiveWindowMs, ...(token === undefined ? [] : [token])];
    let reply: unknown;
    try {
      reply = await redis.evalsha(scriptSha, 1, ...args);
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('NOSCRIPT'))) throw error;
      reply = await redis.eval(script, 1, ...args);
    }
    if (!Array.isArray(reply) || reply.length !== 2 || typeof reply[0] !== 'number' || typeof reply[1] !== 'number') {
      throw new Error(`rolling-window limiter: unexpected reply from Redis: ${JSON.stringify(reply)}`);
    }
    return [reply[0] === 1, reply[1]];
  }

  return {
    async acquire(enterpriseNumber, token) {
      const [granted, value] = await run(enterpriseNumber, token);
      return granted ? { granted: true, grantedAt: value } : { granted: false, retryInMs: value };
    },
    async peekWaitMs(enterpriseNumber) {
      const [granted, value] = await run(enterpriseNumber);
      return granted ? 0 : value;
    },
  };
}
