/**
 * WebSMS.by error codes, as they arrive in `{"status": false, "error": {"code": N, ...}}`.
 *
 * Source: websms-api.md. Codes 1–4 were seen against websms.by; the others are documented for
 * SMSP.by / A1 smart-sender, which run the same platform. Two lists share numbers: the general API
 * codes and the send-validation codes both use 1, 2, 3 and 5, and nobody documents which list a send
 * answer draws from, so those entries name both meanings.
 *
 * Retry safety follows websms-api.md: an explicit `status: false` is final, except 1 (internal error)
 * and 7 (too many requests), which may be retried after a pause. If a 1 really meant "missing
 * parameter", the retry fails the same way and the caller's retry budget ends it.
 */
export interface WebsmsErrorCode {
  readonly meaning: string;
  readonly retryable: boolean;
}

const malformed = { meaning: 'malformed batch, JSON, ids or parameters', retryable: false };

export const websmsErrorCodes: Readonly<Record<number, WebsmsErrorCode>> = {
  1: { meaning: 'internal error (for sends possibly: missing parameter)', retryable: true },
  2: { meaning: 'bad API call (for sends possibly: value too long)', retryable: false },
  3: { meaning: 'missing user or apikey (for sends possibly: bad date)', retryable: false },
  4: { meaning: 'invalid user or apikey', retryable: false },
  5: { meaning: 'IP address not allowed (for sends possibly: value out of range)', retryable: false },
  6: { meaning: 'account not activated', retryable: false },
  7: { meaning: 'too many requests', retryable: true },
  8: { meaning: 'channel unavailable', retryable: false },
  9: malformed,
  10: malformed,
  11: malformed,
  12: malformed,
  13: malformed,
  14: malformed,
  15: malformed,
  16: malformed,
  20: { meaning: 'duplicate message', retryable: false },
  100: { meaning: 'invalid phone number', retryable: false },
  101: { meaning: 'number is in a stop list', retryable: false },
  102: { meaning: 'number is in a stop list', retryable: false },
  103: { meaning: 'operator not allowed', retryable: false },
  104: { meaning: 'sender name not allowed', retryable: false },
  105: { meaning: 'empty text', retryable: false },
  106: { meaning: 'text contains a stop word', retryable: false },
  107: { meaning: 'bad send time', retryable: false },
};

/**
 * The table entry for a code. A code nobody documents (including 0, which the client uses when the
 * provider gave no numeric code at all) is treated as final: retrying an unexplained refusal could
 * repeat it forever.
 */
export function describeWebsmsErrorCode(code: number): WebsmsErrorCode {
  return websmsErrorCodes[code] ?? { meaning: 'undocumented WebSMS error', retryable: false };
}
