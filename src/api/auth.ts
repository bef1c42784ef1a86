import { createHash, timingSafeEqual } from 'node:crypto';
import type { ApiCaller } from './caller.ts';
import { callbackUrlProblem } from '../callbacks/callback-hosts.ts';

// API tokens (API_TOKENS), off unless configured, since the old service's callers send no
// credentials. When on, POST /send needs `Authorization: Bearer <token>`; each token names its caller
// and may be limited to some enterprises (caller.ts). Who may reach what: access.ts.
//
// Only SHA-256 hashes of tokens are configured and kept: a leaked environment or config file does not
// hand out working tokens. Tokens are meant to be long random strings (32 bytes of randomness), so a
// fast hash is enough, as for API keys everywhere: nothing is gained by slowing down a guess at 2^256.

export interface ApiToken extends ApiCaller {
  /** SHA-256 of the token, 32 bytes */
  sha256: Buffer;
}

const NAME = /^[A-Za-z0-9._-]{1,50}$/; // service_name is VARCHAR(50)
const SHA256_HEX = /^[0-9a-fA-F]{64}$/;
const ENTERPRISE = /^[^\s,:;]{1,10}$/; // enterprises.number is VARCHAR(10)

export function hashApiToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

/**
 * `API_TOKENS="crm:<sha256 hex>:0367,0368;billing:<sha256 hex>:*"`: entries separated by `;` or new
 * lines, each `name:sha256:enterprises` where enterprises is `*` or a comma list, optionally followed
 * by `:<callback_url>`, the default callback_url of that caller's messages (everything after the third
 * colon; it may not contain `;`). One name may have several tokens (rotation); one token may not have
 * several names. Throws naming the entry, never echoing the hash.
 */
export function parseApiTokens(value: string): ApiToken[] {
  const entries = value
    .split(/[;\n]/)
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
  if (entries.length === 0) throw new Error('no token entries (expected name:sha256:enterprises)');
  const seen = new Set<string>();
  return entries.map((entry, index) => {
    const where = `entry ${index + 1}`;
    const parts = entry.split(':').map((part) => part.trim());
    if (parts.length < 3) throw new Error(`${where}: expected name:sha256:enterprises[:callback_url] (enterprises "*" for all)`);
    const [name, hash, scope] = parts as [string, string, string];
    const callbackUrl = parts.length > 3 ? entry.slice(entry.indexOf(':', entry.indexOf(':', entry.indexOf(':') + 1) + 1) + 1).trim() : undefined;
    if (!NAME.test(name)) throw new Error(`${where}: the name must be 1–50 letters, digits, ".", "_" or "-"`);
    if (!SHA256_HEX.test(hash)) throw new Error(`${where} (${name}): the token must be given as its SHA-256, 64 hex digits`);
    const lower = hash.toLowerCase();
    if (seen.has(lower)) throw new Error(`${where} (${name}): the same token hash appears twice`);
    seen.add(lower);
    let enterprises: ApiCaller['enterprises'] = 'all';
    if (scope !== '*') {
      const numbers = scope.split(',').map((n) => n.trim());
      if (numbers.some((n) => !ENTERPRISE.test(n))) throw new Error(`${where} (${name}): enterprises must be "*" or a comma list of enterprise numbers`);
      enterprises = new Set(numbers);
    }
    const urlProblem = callbackUrl === undefined ? undefined : callbackUrlProblem(callbackUrl);
    if (urlProblem) throw new Error(`${where} (${name}): the callback_url ${urlProblem}`);
    return { name, sha256: Buffer.from(lower, 'hex'), enterprises, ...(callbackUrl === undefined ? {} : { callbackUrl }) };
  });
}

/**
 * The old service's read-only surface, open to anyone whatever is configured: the service description,
 * the health check, the API docs and their OpenAPI document. Credentials are not even read there.
 * (POST /send is the old surface too, but needs a token once API_TOKENS is on: access.ts.)
 * Compared the way Express routes: case-insensitively, with or without a trailing slash.
 */
export function isOpenPath(path: string): boolean {
  const p = path.toLowerCase().replace(/\/+$/, '') || '/';
  return p === '/' || p === '/health' || p === '/openapi.json' || p === '/docs' || p.startsWith('/docs/');
}

/** The token whose hash matches, compared in constant time against every configured token. */
export function findToken(tokens: readonly ApiToken[], presented: string): ApiToken | undefined {
  const digest = hashApiToken(presented);
  let found: ApiToken | undefined;
  // No early exit: the time taken does not depend on which token (if any) matched.
  for (const token of tokens) {
    if (timingSafeEqual(token.sha256, digest) && !found) found = token;
  }
  return found;
}
