import { describe, expect, it } from 'vitest';
import { addressAllowedForName, allowedTarget, callbackHostProblem, callbackUrlProblem, parseAllowedHosts } from '../../src/callbacks/callback-hosts.ts';
import { backoffAfter } from '../../src/callbacks/callback-dispatcher.ts';
import { parseApiTokens } from '../../src/api/auth.ts';

const HASH = 'a'.repeat(64);

describe('CALLBACK_ALLOWED_HOSTS', () => {
  it('takes names, IP addresses and either with a port, normalised', () => {
    expect(parseAllowedHosts(' CRM.Internal. , 10.0.0.5:8080, [fd00::5], fd00::6 ,')).toEqual([
      { host: 'crm.internal', port: undefined },
      { host: '10.0.0.5', port: 8080 },
      { host: '[fd00::5]', port: undefined },
      { host: '[fd00::6]', port: undefined },
    ]);
    expect(parseAllowedHosts(undefined)).toEqual([]);
  });

  it('refuses schemes, paths, wildcards, credentials and bad ports, naming the entry', () => {
    for (const entry of ['http://crm.internal', 'crm.internal/x', '*.internal', 'user@crm', 'crm:0', 'crm:70000', 'bad_name!', 'a b']) {
      expect(() => parseAllowedHosts(entry), entry).toThrow();
    }
  });

  it('allows a URL only when its host (and the listed port, if any) is on the list', () => {
    const allowed = parseAllowedHosts('crm.internal, 10.0.0.5:8080');
    expect(allowedTarget('https://CRM.internal./sms?token=x', allowed)?.host).toBe('crm.internal');
    expect(allowedTarget('http://10.0.0.5:8080/x', allowed)?.literal).toBe(true);
    expect(allowedTarget('http://10.0.0.5/x', allowed)).toBeUndefined();
    expect(allowedTarget('http://crm.internal.evil.com/x', allowed)).toBeUndefined();
    expect(allowedTarget('http://evil.com#@crm.internal/', allowed)).toBeUndefined();
    // The URL parser's normalisation: 2130706433 is 127.0.0.1, which is not listed.
    expect(allowedTarget('http://2130706433/', allowed)).toBeUndefined();
    expect(callbackHostProblem('http://evil.com/x', allowed)).toMatch(/CALLBACK_ALLOWED_HOSTS/);
    expect(callbackHostProblem('http://crm.internal/x', [])).toMatch(/CALLBACK_ALLOWED_HOSTS is empty/);
  });

  it('lets a listed name reach private ranges but never loopback, link-local, metadata, multicast or unspecified addresses', () => {
    for (const ok of ['10.1.2.3', '172.16.0.1', '192.168.1.1', '100.64.0.1', '8.8.8.8', 'fd00::1', '2001:db8::1']) expect(addressAllowedForName(ok), ok).toBe(true);
    for (const bad of ['127.0.0.1', '127.1.2.3', '0.0.0.0', '169.254.169.254', '224.0.0.1', '255.255.255.255', '::1', '::', 'fe80::1', 'ff02::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:a9fe:a9fe', '64:ff9b::169.254.169.254', 'not-an-ip']) {
      expect(addressAllowedForName(bad), bad).toBe(false);
    }
  });
});

describe('callback_url', () => {
  it('must be an absolute http(s) URL of printable ASCII, without credentials, at most 2048 characters', () => {
    expect(callbackUrlProblem('https://crm.internal/sms-events?x=1')).toBeUndefined();
    for (const bad of ['ftp://crm/x', '/relative', 'crm.internal/x', 'http://', 'javascript:alert(1)', 'http://crm/a b', 'http://u:p@crm/x', `http://crm/${'a'.repeat(2040)}`, 'http:crm/x', 'http://crm/\u00e9']) {
      expect(callbackUrlProblem(bad), bad).toBeDefined();
    }
  });
});

describe('API_TOKENS', () => {
  it('take an optional fourth field, the default callback_url of that caller', () => {
    const [crm, plain] = parseApiTokens(`crm:${HASH}:0367,0368:https://crm.internal/sms-events?a=1;billing:${'b'.repeat(64)}:*`);
    expect(crm?.callbackUrl).toBe('https://crm.internal/sms-events?a=1');
    expect(crm?.enterprises).toEqual(new Set(['0367', '0368']));
    expect(plain?.callbackUrl).toBeUndefined();
    expect(() => parseApiTokens(`crm:${HASH}:*:ftp://crm/x`)).toThrow(/callback_url/);
  });
});

describe('callback retry backoff', () => {
  it('starts at CALLBACK_RETRY_BACKOFF_MS and doubles up to an hour', () => {
    expect([1, 2, 3, 4].map((n) => backoffAfter(n, 10_000))).toEqual([10_000, 20_000, 40_000, 80_000]);
    expect(backoffAfter(40, 10_000)).toBe(3_600_000);
  });
});
