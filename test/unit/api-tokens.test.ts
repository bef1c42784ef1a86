import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { findToken, hashApiToken, isOpenPath, parseApiTokens } from '../../src/api/auth.ts';
import { ConfigError, loadConfig } from '../../src/config.ts';

const sha = (token: string) => createHash('sha256').update(token).digest('hex');

describe('API_TOKENS', () => {
  it('reads name:sha256:enterprises entries, "*" for every enterprise', () => {
    const tokens = parseApiTokens(`crm:${sha('a')}:0367,0368; billing:${sha('b').toUpperCase()}:*\n`);
    expect(tokens).toHaveLength(2);
    expect(tokens[0]).toMatchObject({ name: 'crm', enterprises: new Set(['0367', '0368']) });
    expect(tokens[0]!.sha256.equals(hashApiToken('a'))).toBe(true);
    expect(tokens[1]).toMatchObject({ name: 'billing', enterprises: 'all' });
    expect(tokens[1]!.sha256.equals(hashApiToken('b'))).toBe(true);
  });

  it('lets one caller have two tokens (rotation)', () => {
    expect(parseApiTokens(`crm:${sha('old')}:*;crm:${sha('new')}:*`).map((t) => t.name)).toEqual(['crm', 'crm']);
  });

  it.each([
    ['a plain token instead of its hash', 'crm:my-secret-token:*'],
    ['a missing scope', `crm:${sha('a')}`],
    ['an empty scope', `crm:${sha('a')}:`],
    ['a name with spaces', `the crm:${sha('a')}:*`],
    ['a name longer than service_name', `${'n'.repeat(51)}:${sha('a')}:*`],
    ['an enterprise number longer than 10', `crm:${sha('a')}:03670367036`],
    ['the same token twice', `crm:${sha('a')}:*;billing:${sha('a')}:*`],
    ['nothing at all', ' ; '],
  ])('refuses %s, naming the entry and never echoing it', (_case, value) => {
    expect(() => parseApiTokens(value)).toThrow();
    try {
      parseApiTokens(value);
    } catch (error) {
      expect((error as Error).message).not.toContain('my-secret-token');
    }
  });

  it('stops start-up with a ConfigError naming API_TOKENS', () => {
    expect(() => loadConfig({ API_TOKENS: 'crm:plain:*' })).toThrow(ConfigError);
    expect(() => loadConfig({ API_TOKENS: 'crm:plain:*' })).toThrow('API_TOKENS');
  });

  it('is off by default, as are the request limit and the daily cap; keys are kept 24 h', () => {
    const config = loadConfig({});
    expect(config.apiTokens).toBeUndefined();
    expect(config.requestRateLimit).toBeUndefined();
    expect(config.dailyCapPerEnterprise).toBeUndefined();
    expect(config.idempotencyRetentionS).toBe(86_400);
  });

  it('finds the token whose hash matches the presented token, and no other', () => {
    const tokens = parseApiTokens(`crm:${sha('t-crm')}:0367;billing:${sha('t-billing')}:*`);
    expect(findToken(tokens, 't-billing')?.name).toBe('billing');
    expect(findToken(tokens, 't-crm')?.name).toBe('crm');
    expect(findToken(tokens, sha('t-crm'))).toBeUndefined(); // the hash itself is not a token
    expect(findToken(tokens, 't-crm ')).toBeUndefined();
  });
});

describe('open paths (the old read-only surface, open whatever is configured)', () => {
  it.each(['/', '/health', '/HEALTH', '/health/', '/docs', '/docs/', '/docs/swagger-ui.css', '/openapi.json'])(
    '%s is open',
    (path) => expect(isOpenPath(path)).toBe(true),
  );
  it.each(['/send', '/SEND', '/send/', '/messages/1', '/enterprises/0367/balance', '/reports/daily', '/metrics', '/admin/queues', '/admin/queues/api/queues', '/docsx', '/administrator', '/healthz', '//send'])(
    '%s is not',
    (path) => expect(isOpenPath(path)).toBe(false),
  );
});
