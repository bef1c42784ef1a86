import { z } from 'zod';
import { parseAllowedHosts, type AllowedHost } from './callback-hosts.ts';

// The callback settings: their part of the environment schema (config.ts is the only reader of
// process.env and merges these in) and their cross-checks. Every budget carries its unit.

const integer = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const callbackEnvironment = {
  // Empty (the default): callbacks are off, and a callback_url is refused.
  CALLBACK_ALLOWED_HOSTS: z.string().optional(),
  // Standard Webhooks secret, `whsec_` + base64; required once callbacks are on.
  CALLBACK_SIGNING_SECRET: z.string().optional(),
  // One delivery attempt, connection to last byte of the answer.
  CALLBACK_TIMEOUT_MS: integer(100, 120_000).default(10_000),
  // The first retry comes after this; each next one after twice the previous wait, at most an hour.
  CALLBACK_RETRY_BACKOFF_MS: integer(10, 3_600_000).default(10_000),
  // How long an event is retried before it is given up (operators can retry it: npm run jobs).
  CALLBACK_RETRY_FOR_S: integer(1, 30 * 86_400).default(86_400),
  // Deliveries in flight per worker process: modest, they wait on other people's servers.
  CALLBACK_CONCURRENCY: integer(1, 200).default(8),
};

export interface CallbackSettings {
  /** empty: callbacks are off */
  readonly allowedHosts: readonly AllowedHost[];
  /** `whsec_…`; set whenever allowedHosts is not empty */
  readonly signingSecret: string | undefined;
  readonly timeoutMs: number;
  readonly retryBackoffMs: number;
  readonly retryForS: number;
  readonly concurrency: number;
}

type CallbackEnvironment = z.infer<z.ZodObject<typeof callbackEnvironment>>;

/** Secrets of 24–64 bytes, as the Standard Webhooks specification asks. */
const SECRET = /^whsec_([A-Za-z0-9+/]+={0,2})$/;

/** Throws a message naming the variable. */
export function callbackSettings(e: CallbackEnvironment): CallbackSettings {
  let allowedHosts: AllowedHost[];
  try {
    allowedHosts = parseAllowedHosts(e.CALLBACK_ALLOWED_HOSTS);
  } catch (error) {
    throw new Error(`CALLBACK_ALLOWED_HOSTS: ${error instanceof Error ? error.message : String(error)}`);
  }
  const secret = e.CALLBACK_SIGNING_SECRET;
  if (secret !== undefined) {
    const match = SECRET.exec(secret);
    const bytes = match ? Buffer.from(match[1] ?? '', 'base64').length : 0;
    if (!match || bytes < 24 || bytes > 64) {
      throw new Error('CALLBACK_SIGNING_SECRET: must be whsec_ followed by the base64 of 24–64 random bytes');
    }
  } else if (allowedHosts.length > 0) {
    throw new Error('CALLBACK_SIGNING_SECRET: required when CALLBACK_ALLOWED_HOSTS is set (whsec_ followed by the base64 of 24–64 random bytes)');
  }
  return Object.freeze({
    allowedHosts: Object.freeze(allowedHosts.map((host) => Object.freeze(host))),
    signingSecret: secret,
    timeoutMs: e.CALLBACK_TIMEOUT_MS,
    retryBackoffMs: e.CALLBACK_RETRY_BACKOFF_MS,
    retryForS: e.CALLBACK_RETRY_FOR_S,
    concurrency: e.CALLBACK_CONCURRENCY,
  });
}
