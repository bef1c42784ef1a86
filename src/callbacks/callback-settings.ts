import { parseAllowedHosts, type AllowedHost } from './callback-hosts.ts';

// The callback settings, from their environment variables (validated by config.ts, the only reader of
// process.env), with the checks that span several of them.

/** The CALLBACK_* variables as config.ts's schema has parsed them. */
export interface CallbackEnvironment {
  CALLBACK_ALLOWED_HOSTS?: string | undefined;
  CALLBACK_SIGNING_SECRET?: string | undefined;
  CALLBACK_TIMEOUT_MS: number;
  CALLBACK_RETRY_BACKOFF_MS: number;
  CALLBACK_RETRY_FOR_S: number;
  CALLBACK_CONCURRENCY: number;
}

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
