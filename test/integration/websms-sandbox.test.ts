import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { sandboxTriggers, startSandbox, type SandboxServer } from '../../src/websms/sandbox.ts';

// The sandbox on the wire, driven with plain fetch so that nothing of our client is assumed.
const account = { user: 'shop@example.com', apiKey: 'sandbox-key-1' };
const other = { user: 'other@example.com', apiKey: 'sandbox-key-2' };
const valid = { msisdn: '375296254070', text: 'Your code is 1234', sender: 'Shop' };

const anyNumber: unknown = expect.any(Number);

let sandbox: SandboxServer;
let origin: string;

beforeAll(async () => {
  sandbox = await startSandbox({ accounts: [account, other] });
  origin = sandbox.url.replace(/\/api$/, '');
});
afterAll(async () => {
  await sandbox.close();
});
beforeEach(() => {
  sandbox.reset();
});

type Params = Record<string, string>;

async function get(path: string, params: Params): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`${sandbox.url}/${path}?${new URLSearchParams(params).toString()}`);
  return { status: response.status, body: await response.json() };
}

function send(params: Params, who = account): Promise<{ status: number; body: unknown }> {
  return get('send/sms', { user: who.user, apikey: who.apiKey, ...valid, ...params });
}

async function partsOf(text: string): Promise<unknown> {
  const { body } = await send({ text });
  return (body as { parts: unknown }).parts;
}

describe('WebSMS sandbox wire format', () => {
  it('serves every endpoint under both /api/<path> and /<path>', async () => {
    const credentials = new URLSearchParams({ user: account.user, apikey: account.apiKey }).toString();
    for (const path of ['send/sms', 'balances', 'status/sms', 'statusCustom/sms']) {
      for (const prefix of [`${origin}/api/`, `${origin}/`]) {
        const query = path === 'send/sms' ? `${credentials}&${new URLSearchParams(valid).toString()}` : credentials;
        const response = await fetch(`${prefix}${path}?${query}`);
        expect(response.status, `${prefix}${path}`).toBe(200);
        expect(await response.json(), `${prefix}${path}`).toMatchObject({ status: true });
      }
    }
  });

  it('takes parameters from a POST urlencoded form exactly as from a GET query string', async () => {
    const response = await fetch(`${sandbox.url}/send/sms`, {
      method: 'POST',
      body: new URLSearchParams({ user: account.user, apikey: account.apiKey, ...valid, custom_id: 'posted-1' }),
    });
    expect(await response.json()).toMatchObject({ status: true, custom_id: 'posted-1', parts: 1 });
    expect(sandbox.acceptedSends()).toMatchObject([{ msisdn: valid.msisdn, text: valid.text, sender: 'Shop', customId: 'posted-1' }]);
  });

  it('answers a send like websms.by: message_id, price per part, parts, amount and the echoed custom_id', async () => {
    const first = await send({ custom_id: 'ord-1' });
    const second = await send({ custom_id: 'ord-2', text: 'x'.repeat(161) });
    expect(first).toEqual({
      status: 200,
      body: { status: true, message_id: anyNumber, price: 0.014732, parts: 1, amount: 0.014732, custom_id: 'ord-1' },
    });
    const firstId = (first.body as { message_id: number }).message_id;
    expect(firstId).toBeGreaterThanOrEqual(76440000);
    expect(second.body).toMatchObject({ message_id: firstId + 1, parts: 2, amount: 0.029464 });
  });

  it('counts GSM-7 parts: 160 Latin characters are one part, 161 are two (153 per part)', async () => {
    expect(await partsOf('a'.repeat(160))).toBe(1);
    expect(await partsOf('a'.repeat(161))).toBe(2);
    expect(await partsOf('a'.repeat(306))).toBe(2);
    expect(await partsOf('a'.repeat(307))).toBe(3);
  });

  it('counts UCS-2 parts as soon as one character is outside GSM-7: 70 Cyrillic are one part, 71 are two (67 per part)', async () => {
    expect(await partsOf('ж'.repeat(70))).toBe(1);
    expect(await partsOf('ж'.repeat(71))).toBe(2);
    expect(await partsOf('ж'.repeat(134))).toBe(2);
    expect(await partsOf('ж'.repeat(135))).toBe(3);
    expect(await partsOf(`${'a'.repeat(70)}ж`)).toBe(2);
  });

  it('counts GSM-7 extension characters twice', async () => {
    expect(await partsOf('{'.repeat(80))).toBe(1);
    expect(await partsOf('{'.repeat(81))).toBe(2);
  });

  it('accepts the recipient with a leading +', async () => {
    expect((await send({ msisdn: `+${valid.msisdn}` })).body).toMatchObject({ status: true });
  });

  it('rejects missing credentials with 3 and a wrong user or key with 4, as HTTP 200', async () => {
    expect(await get('send/sms', { ...valid })).toEqual({
      status: 200,
      body: { status: false, error: { code: 3, description: 'Missing user or apikey' } },
    });
    const wrongKey = { status: 200, body: { status: false, error: { code: 4, description: 'Invalid user or apikey' } } };
    expect(await send({}, { user: account.user, apiKey: 'wrong' })).toEqual(wrongKey);
    expect(await send({}, { user: 'nobody@example.com', apiKey: account.apiKey })).toEqual(wrongKey);
    expect(await get('balances', { user: account.user, apikey: 'wrong' })).toEqual(wrongKey);
    expect(sandbox.acceptedSends()).toEqual([]);
  });

  it('validates sends: bad number → 100, empty text → 105, sender over 11 characters → 2', async () => {
    const codeOf = async (params: Params) => ((await send(params)).body as { error: { code: number } }).error.code;
    expect(await codeOf({ msisdn: '12345' })).toBe(100);
    expect(await codeOf({ msisdn: '3752962540701234' })).toBe(100);
    expect(await codeOf({ msisdn: '37529abc4070' })).toBe(100);
    expect(await codeOf({ text: '' })).toBe(105);
    expect(await codeOf({ sender: 'TwelveChars!' })).toBe(2);
    expect((await send({ sender: 'ElevenChars' })).body).toMatchObject({ status: true });
    expect(sandbox.acceptedSends()).toHaveLength(1);
  });

  it('finds a message by custom_id and by message_id, but only for the account that sent it', async () => {
    const { body } = await send({ custom_id: 'mine-1' });
    const messageId = String((body as { message_id: number }).message_id);
    const delivered = { status: true, message_status: { code: 3, name: 'Delivered' } };
    const notFound = { status: true, message_status: { code: false, name: 'Not found' } };
    const mine = { user: account.user, apikey: account.apiKey };
    const theirs = { user: other.user, apikey: other.apiKey };

    expect((await get('statusCustom/sms', { ...mine, custom_id: 'mine-1' })).body).toEqual(delivered);
    expect((await get('status/sms', { ...mine, message_id: messageId })).body).toEqual(delivered);
    expect((await get('statusCustom/sms', { ...mine, custom_id: 'never-sent' })).body).toEqual(notFound);
    expect((await get('statusCustom/sms', { ...theirs, custom_id: 'mine-1' })).body).toEqual(notFound);
    expect((await get('status/sms', { ...theirs, message_id: messageId })).body).toEqual(notFound);
  });

  it('answers balances with the account balance', async () => {
    sandbox.addAccount({ user: 'rich@example.com', apiKey: 'rich-key', sms: 39.174364, viber: 2 });
    expect((await get('balances', { user: 'rich@example.com', apikey: 'rich-key' })).body).toEqual({ status: true, sms: 39.174364, viber: 2 });
  });
});

describe('WebSMS sandbox failure triggers', () => {
  const sendTo = (msisdn: string, customId: string, init?: RequestInit) =>
    fetch(`${sandbox.url}/send/sms?${new URLSearchParams({ user: account.user, apikey: account.apiKey, ...valid, msisdn, custom_id: customId }).toString()}`, init);

  it('answers error codes 4, 100 and 7 on every call for their numbers', async () => {
    for (const [msisdn, code] of [
      [sandboxTriggers.invalidCredentials, 4],
      [sandboxTriggers.invalidNumber, 100],
      [sandboxTriggers.rateLimited, 7],
    ] as const) {
      for (const attempt of [1, 2]) {
        expect(await (await sendTo(msisdn, 'same')).json(), `${msisdn} attempt ${attempt}`).toMatchObject({ status: false, error: { code } });
      }
    }
    expect(sandbox.acceptedSends()).toEqual([]);
  });

  it('answers 7 and 1 only on the first call for a custom_id, then accepts', async () => {
    for (const [msisdn, code] of [
      [sandboxTriggers.rateLimitedOnce, 7],
      [sandboxTriggers.internalErrorOnce, 1],
    ] as const) {
      expect(await (await sendTo(msisdn, 'once-a')).json()).toMatchObject({ status: false, error: { code } });
      expect(await (await sendTo(msisdn, 'once-a')).json()).toMatchObject({ status: true });
      expect(await (await sendTo(msisdn, 'once-b')).json()).toMatchObject({ status: false, error: { code } });
    }
  });

  it('answers HTTP 500 with HTML without accepting for 500, and after accepting for 501', async () => {
    const before = await sendTo(sandboxTriggers.http500, 'c500');
    const after = await sendTo(sandboxTriggers.acceptedThenHttp500, 'c501');
    for (const response of [before, after]) {
      expect(response.status).toBe(500);
      expect(await response.text()).toMatch(/^<html>/);
    }
    expect(sandbox.acceptedSends().map((call) => call.customId)).toEqual(['c501']);
    expect(sandbox.calls().map((call) => call.result)).toEqual(['http-500', 'http-500']);
  });

  it('answers a non-JSON body with HTTP 200 for 502 and accepts nothing', async () => {
    const response = await sendTo(sandboxTriggers.garbage, 'c502');
    expect(response.status).toBe(200);
    await expect(response.json()).rejects.toThrow();
    expect(sandbox.acceptedSends()).toEqual([]);
  });

  it('hangs on the first call for a custom_id: 408 before accepting, 409 after; later calls answer', async () => {
    for (const msisdn of [sandboxTriggers.hangOnce, sandboxTriggers.acceptedThenHangOnce]) {
      // No answer within 500 ms is taken as "hangs": the sandbox answers a normal call in a few ms.
      await expect(sendTo(msisdn, `hang-${msisdn}`, { signal: AbortSignal.timeout(500) }), msisdn).rejects.toThrow(/abort|timeout/i);
    }
    expect(sandbox.acceptedSends().map((call) => call.msisdn)).toEqual([sandboxTriggers.acceptedThenHangOnce]);
    for (const msisdn of [sandboxTriggers.hangOnce, sandboxTriggers.acceptedThenHangOnce]) {
      expect(await (await sendTo(msisdn, `hang-${msisdn}`)).json(), msisdn).toMatchObject({ status: true });
    }
    expect(sandbox.acceptedSends()).toHaveLength(3);
  });
});

describe('WebSMS sandbox records and control', () => {
  it('records every API call with what was sent, never the apikey', async () => {
    await send({ custom_id: 'rec-1' });
    await send({ custom_id: 'rec-2' }, { user: account.user, apiKey: 'wrong-key' });
    await get('balances', { user: account.user, apikey: account.apiKey });
    const calls = sandbox.calls();
    expect(calls).toMatchObject([
      { endpoint: 'send/sms', user: account.user, msisdn: valid.msisdn, text: valid.text, sender: 'Shop', customId: 'rec-1', result: 'accepted', messageId: anyNumber },
      { endpoint: 'send/sms', customId: 'rec-2', result: 'rejected', errorCode: 4 },
      { endpoint: 'balances', result: 'balance' },
    ]);
    for (const call of calls) expect(call.at).toBeGreaterThan(Date.now() - 60_000);
    const recorded = JSON.stringify(calls);
    expect(recorded).not.toContain(account.apiKey);
    expect(recorded).not.toContain('wrong-key');
  });

  it('is driven over HTTP by /__sandbox/ calls, accounts and reset', async () => {
    const added = await fetch(`${origin}/__sandbox/accounts`, { method: 'POST', body: JSON.stringify({ user: 'remote@example.com', apiKey: 'remote-key' }) });
    expect(added.status).toBe(200);
    expect((await send({ custom_id: 'remote-1' }, { user: 'remote@example.com', apiKey: 'remote-key' })).body).toMatchObject({ status: true });

    const calls = (await (await fetch(`${origin}/__sandbox/calls`)).json()) as unknown[];
    expect(calls).toMatchObject([{ user: 'remote@example.com', customId: 'remote-1', result: 'accepted' }]);

    expect((await fetch(`${origin}/__sandbox/reset`, { method: 'POST' })).status).toBe(200);
    expect(await (await fetch(`${origin}/__sandbox/calls`)).json()).toEqual([]);

    const badAccount = await fetch(`${origin}/__sandbox/accounts`, { method: 'POST', body: JSON.stringify({ user: 'x' }) });
    expect(badAccount.status).toBe(400);
  });

  it('delays API calls by the latency set over /__sandbox/latency and refuses a negative one', async () => {
    expect((await fetch(`${origin}/__sandbox/latency?ms=400`, { method: 'POST' })).status).toBe(200);
    try {
      const started = Date.now();
      await send({});
      expect(Date.now() - started).toBeGreaterThanOrEqual(350);
    } finally {
      await fetch(`${origin}/__sandbox/latency?ms=0`, { method: 'POST' });
    }
    expect((await fetch(`${origin}/__sandbox/latency?ms=-1`, { method: 'POST' })).status).toBe(400);
  });

  it('close() releases hanging requests and resolves', async () => {
    const own = await startSandbox({ accounts: [account] });
    const hanging = fetch(`${own.url}/send/sms?${new URLSearchParams({ user: account.user, apikey: account.apiKey, ...valid, msisdn: sandboxTriggers.hangOnce }).toString()}`);
    await expect.poll(() => own.calls().length).toBe(1);
    await own.close();
    await expect(hanging).rejects.toThrow();
  });
});
