import { describe, expect, it } from 'vitest';
import {
  balanceHeader,
  balanceJson,
  formatAmount,
  formatBalanceCheck,
  formatSummary,
  isBelow,
  roundAmount,
  summarise,
  type BalanceCheck,
} from '../../src/enterprises/balance.ts';

// The old service's documented output (websms_user_send.ru.md, "Результат при успехе"), verbatim.
const DOCUMENTED_SUCCESS = `🔍 Проверка баланса WebSMS для предприятия 0367...
💰 БАЛАНС WEBSMS:
============================================================
🏢 Предприятие: 0367 (june)
👤 Пользователь: info@ead.by
------------------------------------------------------------
   📱 SMS: 39.056508 BYN
   💬 Viber: 0 BYN
   💰 Общий доступный баланс: 39.056508 BYN
============================================================`;

const DOCUMENTED_ERROR = `❌ Предприятие 9999 не найдено или не имеет WebSMS настроек
   Проверьте поле custom_domain в таблице enterprises`;

const june: BalanceCheck = {
  kind: 'ok',
  enterpriseNumber: '0367',
  enterpriseName: 'june',
  websmsUser: 'info@ead.by',
  active: true,
  sms: 39.056508,
  viber: 0,
  total: 39.056508,
};

describe('the balance output keeps the old documented format', () => {
  it('prints the documented success block line for line', () => {
    expect([balanceHeader('0367'), ...formatBalanceCheck(june)].join('\n')).toBe(DOCUMENTED_SUCCESS);
  });

  it('prints the documented error for an unknown or unconfigured enterprise', () => {
    expect(formatBalanceCheck({ kind: 'not-configured', enterpriseNumber: '9999' }).join('\n')).toBe(DOCUMENTED_ERROR);
  });

  it('prints amounts as the old tool did: no padding, no exponent, no float noise', () => {
    expect(formatAmount(0)).toBe('0');
    expect(formatAmount(39.056508)).toBe('39.056508');
    expect(formatAmount(12.5)).toBe('12.5');
    expect(formatAmount(100)).toBe('100');
    expect(formatAmount(0.000001)).toBe('0.000001');
    expect(formatAmount(-1.25)).toBe('-1.25');
    expect(formatAmount(0.1 + 0.2)).toBe('0.3');
    expect(roundAmount(0.1 + 0.2)).toBe(0.3);
  });

  it('names an enterprise without a name by its number alone', () => {
    const lines = formatBalanceCheck({ ...june, enterpriseName: null });
    expect(lines).toContain('🏢 Предприятие: 0367');
  });

  it('appends a warning line, after the documented block, for an inactive enterprise', () => {
    const lines = formatBalanceCheck({ ...june, active: false });
    expect(lines.slice(0, 9)).toEqual(formatBalanceCheck(june));
    expect(lines[9]).toMatch(/неактивно/);
  });

  it('compares the SMS balance with the --below threshold and says so after the block', () => {
    const rich: BalanceCheck = { ...june, sms: 5, viber: 100, total: 105 };
    expect(isBelow(rich, 10)).toBe(true);
    expect(isBelow(rich, 5)).toBe(false);
    expect(isBelow(rich, undefined)).toBe(false);
    expect(isBelow({ kind: 'not-configured', enterpriseNumber: '1' }, 10)).toBe(false);
    expect(formatBalanceCheck(rich, 10).at(-1)).toBe('⚠️  Баланс SMS ниже порога: 5 < 10 BYN');
    expect(formatBalanceCheck(rich)).toHaveLength(9);
  });

  it('explains a WebSMS error with the enterprise, the WebSMS user, the reason and what to check', () => {
    const lines = formatBalanceCheck({
      kind: 'websms-error',
      enterpriseNumber: '0368',
      enterpriseName: 'may',
      websmsUser: 'info@ead.by',
      code: 'websms_4',
      message: 'WebSMS error 4: Invalid user or apikey',
    });
    expect(lines).toEqual([
      '❌ WebSMS вернул ошибку при запросе баланса для предприятия 0368 (may)',
      '   👤 Пользователь: info@ead.by',
      '   Причина: WebSMS error 4: Invalid user or apikey',
      '   Проверьте пользователя и API-ключ в поле custom_domain таблицы enterprises',
    ]);
  });

  it('says a timeout is a timeout', () => {
    const lines = formatBalanceCheck({ kind: 'websms-error', enterpriseNumber: '0368', enterpriseName: null, websmsUser: 'u', code: 'timeout', message: 'timed out' });
    expect(lines[0]).toBe('❌ WebSMS не ответил вовремя для предприятия 0368');
  });

  it('summarises --all in one line, with the threshold when one was given', () => {
    const checks: BalanceCheck[] = [june, { ...june, enterpriseNumber: '0368', sms: 1, total: 1 }, { kind: 'not-configured', enterpriseNumber: '0369' }];
    expect(summarise(checks, 2)).toEqual({ checked: 3, ok: 2, failed: 1, below: 1 });
    expect(formatSummary(summarise(checks, 2), 2)).toBe('📊 Итого: проверено предприятий: 3, баланс получен: 2, ошибок: 1, ниже порога 2 BYN: 1');
    expect(formatSummary(summarise(checks))).toBe('📊 Итого: проверено предприятий: 3, баланс получен: 2, ошибок: 1');
  });

  it('gives JSON with the endpoint fields, and a coded error', () => {
    expect(balanceJson(june)).toEqual({
      ok: true,
      enterprise_number: '0367',
      enterprise_name: 'june',
      websms_user: 'info@ead.by',
      sms: 39.056508,
      viber: 0,
      total: 39.056508,
      currency: 'BYN',
      active: true,
    });
    expect(balanceJson(june, 50)).toMatchObject({ below_threshold: true });
    expect(balanceJson({ kind: 'not-configured', enterpriseNumber: '9999' })).toEqual({
      ok: false,
      enterprise_number: '9999',
      error: { code: 'not_found', message: 'Enterprise 9999 not found or has no WebSMS configuration' },
    });
  });
});
