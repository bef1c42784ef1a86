import { describe, expect, it } from 'vitest';
import { normalisePhone, sendRequestSchema } from '../../src/api/schemas.ts';
import { maskPhone } from '../../src/logger.ts';

const valid = { enterprise_number: '0367', phone: '+375296254070', text: 'hi' };

describe('phone numbers', () => {
  it.each([
    ['+375296254070', '+375296254070'],
    ['+375 29 625-40-70', '+375296254070'],
    ['+4915112345678', '+4915112345678'],
    // Not in the allocation tables, but a possible Belarusian number: WebSMS decides (phone-rule.test.ts).
    ['+375290000000', '+375290000000'],
  ])('accepts %s as %s', (input, normalised) => {
    expect(normalisePhone(input)).toBe(normalised);
  });

  it.each([
    '375296254070',
    '+375',
    '+1',
    '',
    '+',
    'phone',
    '+3752962540701234567',
    '+375296254070abc',
    '+375296254070 ext. 12',
    '+375296254070; DROP TABLE user_sms_send',
    '+375296254070\u0000',
  ])('refuses %j', (input) => {
    expect(normalisePhone(input)).toBeNull();
  });

  it('masks all but the country prefix and the last two digits in logs', () => {
    expect(maskPhone('+375296254070')).toBe('+37529*****70');
  });
});

describe('send request schema', () => {
  it('counts characters, not UTF-16 units: 1000 emoji pass, 1001 do not', () => {
    expect(sendRequestSchema.safeParse({ ...valid, text: '😀'.repeat(1000) }).success).toBe(true);
    expect(sendRequestSchema.safeParse({ ...valid, text: '😀'.repeat(1001) }).success).toBe(false);
  });

  it('keeps newlines and tabs in text but refuses other control characters and lone surrogates', () => {
    expect(sendRequestSchema.safeParse({ ...valid, text: 'line1\nline2\tend' }).success).toBe(true);
    for (const text of ['a\u0000b', 'a\u0007b', 'a\u007Fb', 'a\uD800b']) {
      expect(sendRequestSchema.safeParse({ ...valid, text }).success, JSON.stringify(text)).toBe(false);
    }
  });

  it('accepts null for optional fields, as old clients send', () => {
    expect(sendRequestSchema.safeParse({ ...valid, sender: null, custom_id: null }).success).toBe(true);
  });

  it('ignores unknown fields', () => {
    const parsed = sendRequestSchema.parse({ ...valid, priority: 'high' });
    expect(parsed).not.toHaveProperty('priority');
  });

  it('refuses a sender outside printable ASCII and a whitespace-only custom_id', () => {
    expect(sendRequestSchema.safeParse({ ...valid, sender: 'Компания' }).success).toBe(false);
    expect(sendRequestSchema.safeParse({ ...valid, custom_id: '   ' }).success).toBe(false);
  });
});
