import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.ts';

// DEFAULT_SERVICE_NAME: the service_name of sends whose caller names itself neither by token nor by
// X-Service-Name. Recorded in a VARCHAR(50) column beside token names, so it follows their rule.

describe('DEFAULT_SERVICE_NAME', () => {
  it("defaults to 'user_api_endpoint', what the old service recorded", () => {
    expect(loadConfig({}).defaultServiceName).toBe('user_api_endpoint');
  });

  it('treats an empty value as unset', () => {
    expect(loadConfig({ DEFAULT_SERVICE_NAME: '' }).defaultServiceName).toBe('user_api_endpoint');
  });

  it.each(['crm', 'legacy.api_v1-2', 'n'.repeat(50)])('takes %s', (name) => {
    expect(loadConfig({ DEFAULT_SERVICE_NAME: name }).defaultServiceName).toBe(name);
  });

  it.each([
    ['51 characters', 'n'.repeat(51)],
    ['a space', 'user api'],
    ['a colon', 'crm:1'],
    ['a non-Latin letter', 'срм'],
    ['a control character', 'crm\u0007'],
  ])('refuses a name with %s, naming the variable', (_case, name) => {
    expect(() => loadConfig({ DEFAULT_SERVICE_NAME: name })).toThrow(ConfigError);
    expect(() => loadConfig({ DEFAULT_SERVICE_NAME: name })).toThrow(/DEFAULT_SERVICE_NAME: must be 1–50 letters, digits/);
  });
});
