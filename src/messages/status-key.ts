import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

// A message's status key: the capability in its `status_url`. Whoever holds the link may read the
// message's state and cancel it, and nobody else without credentials: message ids are sequential,
// so the id alone must never be enough. 192 random bits cannot be guessed; only their SHA-256 is
// stored, so the table (a backup, a replica, a report) does not hand out working links. A fast hash
// is enough for a random key of this size, as for API tokens.

const KEY_BYTES = 24;
/** base64url of KEY_BYTES bytes */
const KEY_FORMAT = /^[A-Za-z0-9_-]{32}$/;
/** Keys kept per message: each Idempotency-Key replay hands out one more; the oldest go first. */
export const STATUS_KEYS_KEPT = 10;

export interface StatusKey {
  /** given to the caller once, in the answer's status_url */
  key: string;
  /** what the row keeps */
  sha256: Buffer;
}

export function newStatusKey(): StatusKey {
  const key = randomBytes(KEY_BYTES).toString('base64url');
  return { key, sha256: hashStatusKey(key) };
}

export function hashStatusKey(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest();
}

/** Whether `presented` is one of the message's keys; compared in constant time, with no early exit. */
export function statusKeyMatches(storedHashes: readonly Buffer[], presented: string): boolean {
  if (!KEY_FORMAT.test(presented)) return false;
  const digest = hashStatusKey(presented);
  let match = false;
  for (const stored of storedHashes) {
    if (stored.length === digest.length && timingSafeEqual(stored, digest)) match = true;
  }
  return match;
}

/** Where the caller asks about its message (relative to the API's base, like every path it documents). */
export function statusUrl(messageId: number, key: string): string {
  return `/messages/${messageId}?key=${key}`;
}
