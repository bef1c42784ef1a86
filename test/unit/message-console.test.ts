import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { escapeHtml, html } from '../../src/console/html.ts';
import { MAX_RANGE_DAYS, parseSearch, parseWallTime } from '../../src/console/message-search.ts';

describe('console html', () => {
  it('escapes every interpolated string, so no value can open a tag or leave an attribute', () => {
    fc.assert(
      fc.property(fc.string(), (value) => {
        const escaped = html`${value}`.toString();
        expect(escaped).not.toMatch(/[<>"']/);
        const decoded = escaped.replace(/&(lt|gt|quot|#39|amp);/g, (_entity, name: string) => ({ lt: '<', gt: '>', quot: '"', '#39': "'", amp: '&' })[name]!);
        expect(decoded).toBe(value);
      }),
    );
    expect(escapeHtml(`<script>alert('x')</script>&"`)).toBe('&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;');
  });

  it('keeps markup built by html itself, and renders lists, numbers and empty values', () => {
    const inner = html`<b>${'<i>'}</b>`;
    expect(html`<p>${inner}${[1, ' & ', null, undefined, false, html`<br>`]}</p>`.toString()).toBe('<p><b>&lt;i&gt;</b>1 &amp; <br></p>');
  });
});

describe('console search parameters', () => {
  it('reads each criterion, normalising a phone to E.164 and dates to wall time', () => {
    const form = parseSearch({ id: '42', enterprise: ' 0367 ', phone: '+375 (29) 625-40-70', custom_id: 'order-1', message_id: '0076440000', from: '2026-12-01T10:00', to: '2026-12-02' });
    expect(form.errors).toEqual({});
    expect(form.criteria).toEqual({
      id: 42,
      enterprise: '0367',
      phone: '+375296254070',
      customId: 'order-1',
      websmsMessageId: '76440000',
      from: '2026-12-01 10:00:00',
      to: '2026-12-02 23:59:59',
    });
  });

  it.each([
    ['id', "1' OR '1'='1"],
    ['id', '0'],
    ['id', '1234567890123456'],
    ['message_id', '1234567890123456789'],
    ['phone', '375296254070'],
    ['phone', '+375296254070 OR 1=1'],
    ['enterprise', '01234567890'],
    ['custom_id', 'x'.repeat(21)],
    ['enterprise', 'a\u0000b'],
    ['custom_id', '\uD800'],
    ['from', '2026-02-30'],
    ['from', '1999-12-31'],
    ['to', '2026-12-01T24:00'],
    ['to', 'yesterday'],
  ])('refuses %s=%j, naming the field', (field, value) => {
    const form = parseSearch({ [field]: value });
    expect(Object.keys(form.errors)).toEqual([field]);
    expect(form.criteria).toEqual({});
  });

  it('refuses repeated and unknown parameters, reversed and over-long ranges', () => {
    expect(parseSearch({ enterprise: ['0367', '0368'] }).errors).toHaveProperty('enterprise');
    expect(parseSearch({ 'enterprise[$ne]': '1' }).errors).toHaveProperty('query');
    expect(parseSearch({ from: '2026-12-02', to: '2026-12-01' }).errors).toHaveProperty('range');
    expect(parseSearch({ from: '2025-01-01', to: '2026-12-01' }).errors).toHaveProperty('range');
    expect(MAX_RANGE_DAYS).toBe(366);
    expect(parseSearch({ from: '2025-11-30T00:00', to: '2026-12-01T23:59' }).errors).toHaveProperty('range');
    expect(parseSearch({ from: '2025-12-01T00:00', to: '2026-12-01T23:59' }).errors).toEqual({});
  });

  it('reads a date alone as the whole day, and a minute as the whole minute', () => {
    expect(parseWallTime('2026-12-01', false)).toBe('2026-12-01 00:00:00');
    expect(parseWallTime('2026-12-01', true)).toBe('2026-12-01 23:59:59');
    expect(parseWallTime('2026-12-01T10:15', true)).toBe('2026-12-01 10:15:59');
    expect(parseWallTime('2026-12-01 10:15:30', true)).toBe('2026-12-01 10:15:30');
    expect(parseWallTime('2024-02-29', false)).toBe('2024-02-29 00:00:00');
    expect(parseWallTime('2026-02-29', false)).toBeUndefined();
  });
});
