import { describe, expect, it } from 'vitest';
import { parseCustomDomain } from '../../src/enterprises/credentials.ts';

describe('parseCustomDomain', () => {
  it('splits "<user> <api key>" on the space', () => {
    expect(parseCustomDomain('info@ead.by abc123')).toEqual({ user: 'info@ead.by', apiKey: 'abc123' });
  });

  it.each([
    ['NULL', null],
    ['undefined', undefined],
    ['empty', ''],
    ['only spaces', '   '],
    ['no space', 'info@ead.by'],
    ['three words', 'info@ead.by key extra'],
  ])('means "no WebSMS configuration" for %s', (_case, value) => {
    expect(parseCustomDomain(value)).toBeNull();
  });

  it.each([
    ['leading and trailing spaces', '  info@ead.by abc123  '],
    ['two spaces between', 'info@ead.by  abc123'],
    ['a tab between', 'info@ead.by\tabc123'],
    ['a trailing newline', 'info@ead.by abc123\n'],
  ])('tolerates %s typed in by hand', (_case, value) => {
    expect(parseCustomDomain(value)).toEqual({ user: 'info@ead.by', apiKey: 'abc123' });
  });
});
