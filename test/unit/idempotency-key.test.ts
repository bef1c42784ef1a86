import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseIdempotencyKey, requestHash, type RequestFingerprint } from '../../src/messages/idempotency.ts';

describe('Idempotency-Key header', () => {
  it('is optional', () => {
    expect(parseIdempotencyKey(undefined)).toEqual({ ok: true, key: null });
  });

  it.each(['a', 'order-98765/attempt', '550e8400-e29b-41d4-a716-446655440000', "'; DROP TABLE user_sms_send; --", 'k'.repeat(255)])('accepts %j', (key) => {
    expect(parseIdempotencyKey([key])).toEqual({ ok: true, key });
  });

  it.each([
    ['empty', ''],
    ['blank', '   '],
    ['256 characters', 'k'.repeat(256)],
    ['non-ASCII', 'ключ'],
    ['Latin-1 bytes as Node reads them', 'caf\u00e9'],
    ['a control character', 'a\u0001b'],
    ['a tab', 'a\tb'],
  ])('refuses %s', (_case, key) => {
    const parsed = parseIdempotencyKey([key]);
    expect(parsed.ok).toBe(false);
  });

  it('refuses a key sent twice instead of joining the two', () => {
    expect(parseIdempotencyKey(['a', 'b'])).toEqual({ ok: false, problem: 'must be sent at most once' });
  });
});

describe('request hash', () => {
  const base: RequestFingerprint = { enterpriseNumber: '0367', phone: '+375296254070', text: 'hello', sender: 'Vochi-CRM', customId: null };

  it('is 64 hex digits (the request_hash column) and stable', () => {
    expect(requestHash(base)).toMatch(/^[0-9a-f]{64}$/);
    expect(requestHash({ ...base })).toBe(requestHash(base));
  });

  it('changes with every field that would change what is sent', () => {
    const variants: RequestFingerprint[] = [
      { ...base, enterpriseNumber: '0368' },
      { ...base, phone: '+375296254071' },
      { ...base, text: 'hello ' },
      { ...base, sender: 'Other' },
      { ...base, customId: 'c1' },
      { ...base, customId: '' },
    ];
    const hashes = new Set([base, ...variants].map(requestHash));
    expect(hashes.size).toBe(variants.length + 1);
  });

  it('keeps field boundaries: moving characters between fields changes the hash', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.string(), (a, b, c) => {
        fc.pre(a + b !== '' && b !== '');
        const one = requestHash({ ...base, text: a + b, customId: c });
        const two = requestHash({ ...base, text: a, customId: b + c });
        return one !== two;
      }),
    );
  });
});
