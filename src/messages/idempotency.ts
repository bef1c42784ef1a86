import { createHash } from 'node:crypto';

// Idempotency-Key (design decision 4): the same key for the same enterprise, within the retention
// window, means "the same message". The rules here are pure; the guarantee itself is the unique index
// (enterprise_number, idempotency_key) in PostgreSQL, used by admission.ts.

export const IDEMPOTENCY_HEADER = 'Idempotency-Key';

/** Printable ASCII, as header values travel; 255 is the column's width. */
const KEY_PATTERN = /^[\x20-\x7E]{1,255}$/;

export type IdempotencyKeyParse = { ok: true; key: string | null } | { ok: false; problem: string };

/**
 * The header as received (`req.headersDistinct`: one entry per occurrence). Absent: no key. Sent twice:
 * refused, since Node would otherwise join the two into one key the caller never chose.
 */
export function parseIdempotencyKey(values: readonly string[] | undefined): IdempotencyKeyParse {
  if (values === undefined || values.length === 0) return { ok: true, key: null };
  if (values.length > 1) return { ok: false, problem: 'must be sent at most once' };
  const key = values[0]!;
  if (!KEY_PATTERN.test(key) || key.trim() === '') return { ok: false, problem: 'must be 1–255 printable ASCII characters' };
  return { ok: true, key };
}

/** What makes two requests "the same message": everything that would be sent, after normalisation. */
export interface RequestFingerprint {
  enterpriseNumber: string;
  /** E.164 */
  phone: string;
  text: string;
  /** the sender that would be used: a request that omits it equals one naming the default sender */
  sender: string;
  customId: string | null;
}

/**
 * SHA-256 hex (the `request_hash` column) over the normalised request. A JSON array keeps field
 * boundaries unambiguous ("ab"+"c" ≠ "a"+"bc") and has no key-order question; the text is hashed as
 * sent, byte for byte, because that is what the recipient would read.
 */
export function requestHash(request: RequestFingerprint): string {
  const canonical = JSON.stringify([request.enterpriseNumber, request.phone, request.text, request.sender, request.customId]);
  return createHash('sha256').update(canonical, 'utf8').digest('hex');
}

export const KEY_REUSED_MESSAGE =
  'Idempotency-Key was already used for a different request to this enterprise; use a new key for a new message';
