import type { RedisClient } from '../redis-connection.ts';
import { checkWindowOptions, countInFixedWindow } from './request-rate-limit.ts';

// Failed credentials per client, counted in Redis so that every API process shares the count: a
// password or token cannot be guessed at line speed by spreading guesses over processes. A fixed
// window (one small key per failing client, expiring on its own) is enough for this: the point is
// a handful of tries a minute instead of thousands a second, not an exact rate.

export interface CredentialThrottleOptions {
  /** keys are `${keyPrefix}:auth-fail:<client>` */
  keyPrefix: string;
  /** failures allowed per window; the next attempt with credentials gets 429 */
  limit: number;
  windowMs: number;
}

export interface CredentialThrottle {
  /** ms until this client may present credentials again; 0 when it may now */
  blockedForMs(client: string): Promise<number>;
  /** counts one failed credential for this client */
  failed(client: string): Promise<void>;
}

export function createCredentialThrottle(redis: RedisClient, options: CredentialThrottleOptions): CredentialThrottle {
  const { keyPrefix, limit, windowMs } = options;
  checkWindowOptions(limit, windowMs);
  const keyFor = (client: string) => `${keyPrefix}:auth-fail:${client}`;
  return {
    async blockedForMs(client) {
      const replies = await redis.multi().get(keyFor(client)).pttl(keyFor(client)).exec();
      if (!replies || replies.some(([error]) => error)) throw new Error('credential throttle: Redis refused the read');
      const count = Number(replies[0]?.[1] ?? 0);
      const ttlMs = Number(replies[1]?.[1] ?? 0);
      return count >= limit ? Math.max(1, ttlMs) : 0;
    },
    async failed(client) {
      await countInFixedWindow(redis, keyFor(client), windowMs);
    },
  };
}
