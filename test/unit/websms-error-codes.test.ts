import { describe, expect, it } from 'vitest';
import { describeWebsmsErrorCode, websmsErrorCodes } from '../../src/websms/error-codes.ts';

describe('WebSMS error codes', () => {
  it('marks only 1 (internal error) and 7 (too many requests) as safe to retry', () => {
    const retryable = Object.entries(websmsErrorCodes)
      .filter(([, entry]) => entry.retryable)
      .map(([code]) => Number(code));
    expect(retryable).toEqual([1, 7]);
  });

  it('gives a meaning for every code websms-api.md documents', () => {
    const documented = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 100, 101, 102, 103, 104, 105, 106, 107];
    for (const code of documented) {
      expect(websmsErrorCodes[code]?.meaning, `code ${code}`).toMatch(/\w/);
    }
  });

  it('names both meanings where the general and the send-validation lists share a code', () => {
    for (const code of [1, 2, 3, 5]) {
      expect(describeWebsmsErrorCode(code).meaning, `code ${code}`).toContain('for sends possibly');
    }
  });

  it('treats an undocumented code, and 0 for "no code given", as final', () => {
    for (const code of [0, 17, 999]) {
      expect(describeWebsmsErrorCode(code)).toEqual({ meaning: 'undocumented WebSMS error', retryable: false });
    }
  });
});
