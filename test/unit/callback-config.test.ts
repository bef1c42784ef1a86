import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';

const SECRET = `whsec_${Buffer.alloc(32, 7).toString('base64')}`;
const HASH = 'a'.repeat(64);

describe('callback settings', () => {
  it('are off by default, and need a whsec_ secret of 24–64 bytes once a host is allowed', () => {
    expect(loadConfig({}).callbacks.allowedHosts).toEqual([]);
    expect(() => loadConfig({ CALLBACK_ALLOWED_HOSTS: 'crm.internal' })).toThrow(/CALLBACK_SIGNING_SECRET: required/);
    expect(() => loadConfig({ CALLBACK_ALLOWED_HOSTS: 'crm.internal', CALLBACK_SIGNING_SECRET: 'whsec_c2hvcnQ=' })).toThrow(/CALLBACK_SIGNING_SECRET/);
    expect(() => loadConfig({ CALLBACK_ALLOWED_HOSTS: 'crm.internal', CALLBACK_SIGNING_SECRET: 'not-a-secret' })).toThrow(/CALLBACK_SIGNING_SECRET/);
    expect(() => loadConfig({ CALLBACK_ALLOWED_HOSTS: 'http://crm', CALLBACK_SIGNING_SECRET: SECRET })).toThrow(/CALLBACK_ALLOWED_HOSTS/);
    const config = loadConfig({ CALLBACK_ALLOWED_HOSTS: 'crm.internal', CALLBACK_SIGNING_SECRET: SECRET });
    expect(config.callbacks).toMatchObject({ timeoutMs: 10_000, retryBackoffMs: 10_000, retryForS: 86_400 });
  });

  it('let a token carry a default callback_url whose host must be allowed', () => {
    const tokens = `crm:${HASH}:*:https://crm.internal/x`;
    expect(() => loadConfig({ API_TOKENS: tokens })).toThrow(/callback_url.*CALLBACK_ALLOWED_HOSTS/);
    expect(loadConfig({ API_TOKENS: tokens, CALLBACK_ALLOWED_HOSTS: 'crm.internal', CALLBACK_SIGNING_SECRET: SECRET }).apiTokens?.[0]?.callbackUrl).toBe('https://crm.internal/x');
  });
});

