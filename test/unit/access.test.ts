import { describe, expect, it } from 'vitest';
import { isDirectLocalPeer } from '../../src/api/access.ts';
import { hashStatusKey, newStatusKey, statusKeyMatches, statusUrl } from '../../src/messages/status-key.ts';

describe('a direct local peer (the operator while ADMIN_USER is unset)', () => {
  it.each(['127.0.0.1', '127.1.2.3', '::1', '::ffff:127.0.0.1'])('is a loopback connection without proxy headers: %s', (peer) => {
    expect(isDirectLocalPeer(peer, {})).toBe(true);
  });

  it.each(['192.0.2.2', '10.0.0.1', '::ffff:10.0.0.1', 'fd00::2', '1127.0.0.1', '127.0.0.1.example', ''])('is never another address: %s', (peer) => {
    expect(isDirectLocalPeer(peer, {})).toBe(false);
  });

  it.each([['x-forwarded-for'], ['x-real-ip'], ['forwarded'], ['via'], ['x-forwarded-host'], ['x-forwarded-proto']])(
    'is never a request relayed by a proxy: %s present, whatever its value',
    (header) => {
      expect(isDirectLocalPeer('127.0.0.1', { [header]: '127.0.0.1' })).toBe(false);
      expect(isDirectLocalPeer('127.0.0.1', { [header]: '' })).toBe(false);
    },
  );

  it('is nothing when the socket has no address (already closed)', () => {
    expect(isDirectLocalPeer(undefined, {})).toBe(false);
  });
});

describe('status keys', () => {
  it('are 192 random bits in base64url, different every time, and only their SHA-256 is kept', () => {
    const keys = Array.from({ length: 1000 }, () => newStatusKey());
    expect(new Set(keys.map((k) => k.key)).size).toBe(1000);
    for (const { key, sha256 } of keys.slice(0, 10)) {
      expect(key).toMatch(/^[A-Za-z0-9_-]{32}$/);
      expect(Buffer.from(key, 'base64url')).toHaveLength(24);
      expect(sha256.equals(hashStatusKey(key))).toBe(true);
    }
  });

  it('match only one of the stored keys, exactly', () => {
    const [a, b, c] = [newStatusKey(), newStatusKey(), newStatusKey()];
    expect(statusKeyMatches([a.sha256, b.sha256], a.key)).toBe(true);
    expect(statusKeyMatches([a.sha256, b.sha256], b.key)).toBe(true);
    expect(statusKeyMatches([a.sha256, b.sha256], c.key)).toBe(false);
    expect(statusKeyMatches([], a.key)).toBe(false);
    expect(statusKeyMatches([a.sha256], `${a.key} `)).toBe(false);
    expect(statusKeyMatches([a.sha256], a.key.slice(0, 31))).toBe(false);
    expect(statusKeyMatches([a.sha256], a.key.toUpperCase() === a.key ? a.key.toLowerCase() : a.key.toUpperCase())).toBe(false);
    // The stored hash itself is not a key.
    expect(statusKeyMatches([a.sha256], a.sha256.toString('base64url'))).toBe(false);
  });

  it('travel in the message link', () => {
    const { key } = newStatusKey();
    expect(statusUrl(42, key)).toBe(`/messages/42?key=${key}`);
  });
});
