import { Agent, request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect, isIP } from 'node:net';
import fc from 'fast-check';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningApi } from '../../src/roles.ts';
import { createTestEnv, DEMO_KEY, DEMO_USER, eventually, type TestEnv } from '../support/context.ts';

// Hostile input against every endpoint, through the real HTTP server, PostgreSQL, Redis, a worker and
// the WebSMS sandbox. For every request: no 5xx; an invalid one gets a 4xx envelope naming the problem
// and leaves nothing behind (no row, no queued job, no WebSMS call); valid but odd content (emoji,
// mixed scripts, SQL, header-injection strings) is stored and sent byte for byte. The service is still
// healthy afterwards.

const PHONE = '+375296254070';
const VALID = { enterprise_number: '0367', phone: PHONE, text: 'hello', sender: 'Vochi', custom_id: 'c-1' } as const;
type Field = keyof typeof VALID;
const FIELDS = Object.keys(VALID) as Field[];
// 256 KiB: room for 100 000 nested arrays (200 000 bytes) inside the limit.
const BODY_LIMIT_BYTES = 262_144;

let env: TestEnv;
let api: RunningApi;
let agent: Agent;
const seen = { requests: 0, statuses: new Map<number, number>() };

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  json: Record<string, unknown>;
}

/** node:http rather than fetch: any method, any header (repeated, Latin-1, absent Content-Type), any body bytes. */
function call(method: string, path: string, options: { headers?: Record<string, string | string[]>; body?: string | Buffer } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const url = new URL(api.url);
    // An explicit length: Node's client does not frame a body of DELETE, OPTIONS or TRACE on its own.
    const length = options.body === undefined ? {} : { 'content-length': String(Buffer.byteLength(options.body)) };
    const req = httpRequest({ host: url.hostname, port: url.port, method, path, headers: { ...length, ...options.headers }, agent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(text) as Record<string, unknown>;
        } catch {
          // asserted by the caller where it matters
        }
        const status = res.statusCode ?? 0;
        seen.requests += 1;
        seen.statuses.set(status, (seen.statuses.get(status) ?? 0) + 1);
        resolve({ status, headers: res.headers, text, json });
      });
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

const JSON_TYPE = { 'content-type': 'application/json' };
const postSend = (body: unknown, headers: Record<string, string | string[]> = {}) =>
  call('POST', '/send', { headers: { ...JSON_TYPE, ...headers }, body: typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body) });

/** What an invalid request may leave behind: nothing. */
async function footprint() {
  const rows = Number((await sql<{ n: string }>`SELECT count(*) AS n FROM user_sms_send`.execute(env.db)).rows[0]!.n);
  const counts = await api.deps.queue.getJobCounts();
  const jobs = Object.values(counts).reduce((sum, n) => sum + n, 0);
  const sends = env.sandbox.calls().filter((c) => c.endpoint === 'send/sms').length;
  return { rows, jobs, sends };
}

/** Runs `requests` and checks they left no row, no job and no WebSMS call behind. */
async function leavesNothing(requests: () => Promise<void>) {
  // Messages earlier tests left on their way (a 202) are sent in their own time: let them finish
  // first, or their sends would be counted against these requests.
  await eventually(async () => {
    const open = await sql<{ n: string }>`SELECT count(*) AS n FROM user_sms_send WHERE status IN ('pending', 'queued', 'sending')`.execute(env.db);
    return Number(open.rows[0]!.n) === 0 ? true : undefined;
  }, 30_000);
  const before = await footprint();
  await requests();
  expect(await footprint()).toEqual(before);
}

/** A 4xx with the one error envelope, the reason in `error` (and `detail`), naming `mentions` when given. */
function expectRefusal(answer: Answer, statuses: number[], mentions?: string | RegExp, label = '') {
  expect(statuses, `${label}: got ${answer.status} ${answer.text.slice(0, 300)}`).toContain(answer.status);
  expect(answer.headers['content-type'], label).toMatch(/^application\/json/);
  expect(answer.json, label).toMatchObject({ success: false, message_id: null, price: null, parts: null, amount: null });
  expect(typeof answer.json.error, label).toBe('string');
  expect((answer.json.error as string).length, label).toBeGreaterThan(0);
  expect(answer.json.detail, label).toBe(answer.json.error);
  if (mentions !== undefined) expect(answer.json.error, label).toMatch(typeof mentions === 'string' ? new RegExp(escapeRegExp(mentions), 'i') : mentions);
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const codePoints = (s: string) => [...s].length;

beforeAll(async () => {
  env = await createTestEnv({
    RATE_LIMIT_PER_WINDOW: '10000',
    BODY_LIMIT_BYTES: String(BODY_LIMIT_BYTES),
    SEND_WAIT_MS: '3000',
    // Callbacks on, to one host: a callback_url is judged on its own merits, not refused wholesale.
    CALLBACK_ALLOWED_HOSTS: 'crm.example',
    CALLBACK_SIGNING_SECRET: `whsec_${Buffer.alloc(32, 7).toString('base64')}`,
  });
  await env.seedEnterprise({ number: '0367', name: 'june', customDomain: `${DEMO_USER} ${DEMO_KEY}` });
  await env.seedEnterprise({ number: '0400', customDomain: null });
  api = (await env.startService({ workers: 1 })).api!;
  agent = new Agent({ keepAlive: true, maxSockets: 8 });
});

afterAll(async () => {
  agent?.destroy();
  await env?.cleanup();
});

// ── Invalid bodies: crafted ──────────────────────────────────────────────────────────────────────

const WRONG_TYPES: Array<[string, unknown]> = [
  ['a number', 375296254070],
  ['zero', 0],
  ['a float', 1.5],
  ['true', true],
  ['false', false],
  ['an empty array', []],
  ['an array of the right value', ['0367']],
  ['an empty object', {}],
  ['a query operator object', { $ne: null }],
];

describe('POST /send refuses invalid bodies with a 4xx naming the problem, and leaves nothing behind', () => {
  it('malformed JSON', async () => {
    await leavesNothing(async () => {
      for (const body of [
        '{',
        '{"enterprise_number": "0367", ',
        '{"enterprise_number": "0367"}}',
        "{'enterprise_number': '0367'}",
        '{"enterprise_number": "0367",}',
        '{"text": "\\x41"}',
        '{"text": "unterminated}',
        '{"a": NaN}',
        '{"a": Infinity}',
        '{"a": undefined}',
        '[1, 2',
        'nul',
        '\u0000',
        '<xml/>',
        'enterprise_number=0367&phone=%2B375296254070',
        '"just a string"',
        '42',
        'null',
        'true',
        '\uFEFF{"enterprise_number": "0367"}',
        '{"enterprise_number": "0367"} {"text": "second document"}',
      ]) {
        expectRefusal(await postSend(body), [400, 422], /JSON|body|enterprise_number|phone|text/, JSON.stringify(body));
      }
    });
  });

  it('every truncation of a valid body', async () => {
    const full = JSON.stringify({ ...VALID, text: 'Привет, 😀 مرحبا' });
    await leavesNothing(async () => {
      // Cut inside a multi-byte character too: bytes, not UTF-16 units.
      const bytes = Buffer.from(full, 'utf8');
      for (let length = 0; length < bytes.length; length += 1) {
        expectRefusal(await postSend(bytes.subarray(0, length)), [400, 422], /JSON|body|required/, `first ${length} bytes`);
      }
    });
  });

  it('wrong content types, charsets and encodings', async () => {
    const body = JSON.stringify(VALID);
    await leavesNothing(async () => {
      for (const type of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/xml', 'text/json', 'application/jsonp', 'json', '*/*', '']) {
        const headers: Record<string, string> = type === '' ? {} : { 'content-type': type };
        expectRefusal(await call('POST', '/send', { headers, body }), [415], /Content-Type/, type || '(none)');
      }
      for (const charset of ['utf-16', 'latin1', 'koi8-r', 'x-unknown']) {
        // utf-16 is a charset the parser knows: this UTF-8 body then decodes to garbage (400).
        expectRefusal(await postSend(body, { 'content-type': `application/json; charset=${charset}` }), [400, 415], /charset|JSON/i, charset);
      }
      for (const encoding of ['gzip', 'deflate', 'br', 'compress', 'x-unknown']) {
        // Not actually compressed: a lie about the encoding.
        expectRefusal(await postSend(body, { 'content-encoding': encoding }), [400, 415], undefined, encoding);
      }
    });
  });

  it('bodies over the size limit, even when compressed small', async () => {
    const { gzipSync } = await import('node:zlib');
    await leavesNothing(async () => {
      expectRefusal(await postSend({ ...VALID, text: 'x'.repeat(BODY_LIMIT_BYTES) }), [413], /too large/);
      expectRefusal(await postSend('['.repeat(BODY_LIMIT_BYTES + 1)), [413], /too large/);
      // A zip bomb: 4 MiB of JSON in a few KiB of gzip. The limit applies to what it inflates to.
      const bomb = gzipSync(Buffer.from(JSON.stringify({ ...VALID, text: ' '.repeat(4 * 1024 * 1024) })));
      expect(bomb.length).toBeLessThan(BODY_LIMIT_BYTES);
      expectRefusal(await postSend(bomb, { 'content-encoding': 'gzip' }), [413], /too large/);
    });
  });

  it('deep nesting within the size limit: 100 000 nested arrays, and as a field value', async () => {
    const depth = 100_000;
    const arrays = `${'['.repeat(depth)}${']'.repeat(depth)}`;
    expect(Buffer.byteLength(arrays)).toBeLessThan(BODY_LIMIT_BYTES);
    await leavesNothing(async () => {
      expectRefusal(await postSend(arrays), [422], /body/);
      for (const field of FIELDS) {
        const nested = `{${FIELDS.filter((f) => f !== field).map((f) => `${JSON.stringify(f)}:${JSON.stringify(VALID[f])}`).join(',')},${JSON.stringify(field)}:${arrays}}`;
        expectRefusal(await postSend(nested), [422], field, `${field} nested`);
        const objects = `${'{"a":'.repeat(40_000)}1${'}'.repeat(40_000)}`;
        const nestedObjects = `{${FIELDS.filter((f) => f !== field).map((f) => `${JSON.stringify(f)}:${JSON.stringify(VALID[f])}`).join(',')},${JSON.stringify(field)}:${objects}}`;
        expectRefusal(await postSend(nestedObjects), [422], field, `${field} nested objects`);
      }
    });
  });

  it('wrong types for every field, and missing required fields', async () => {
    await leavesNothing(async () => {
      for (const field of FIELDS) {
        for (const [name, value] of WRONG_TYPES) {
          const answer = await postSend({ ...VALID, [field]: value });
          expectRefusal(answer, [422], field, `${field} as ${name}`);
          expect(answer.json.errors, `${field} as ${name}`).toEqual(expect.arrayContaining([expect.objectContaining({ field })]));
        }
      }
      for (const field of ['enterprise_number', 'phone', 'text'] as const) {
        const { [field]: _dropped, ...rest } = VALID;
        expectRefusal(await postSend(rest), [422], `${field} is required`, `missing ${field}`);
        expectRefusal(await postSend({ ...VALID, [field]: null }), [422], field, `null ${field}`);
      }
      for (const body of [[], [VALID], {}, { '': 1 }]) expectRefusal(await postSend(body), [422], /body|required/, JSON.stringify(body));
    });
  });

  it('boundary lengths: 1001 characters of text, 12 of sender, 21 of custom_id, 11 of enterprise_number, 65 of phone', async () => {
    await leavesNothing(async () => {
      for (const [field, value] of [
        ['text', 'a'.repeat(1001)],
        ['text', '😀'.repeat(1001)],
        ['text', 'Ж'.repeat(1001)],
        ['sender', 'ABCDEFGHIJKL'],
        ['custom_id', 'c'.repeat(21)],
        ['custom_id', '😀'.repeat(21)],
        ['enterprise_number', '0'.repeat(11)],
        ['phone', `+${'1'.repeat(64)}`],
      ] as const) {
        expectRefusal(await postSend({ ...VALID, [field]: value }), [422], field, `${field} of ${codePoints(value)}`);
      }
      for (const [field, value] of [['text', ''], ['sender', ''], ['sender', '   '], ['custom_id', ''], ['custom_id', ' '], ['enterprise_number', ''], ['enterprise_number', '  ']] as const) {
        expectRefusal(await postSend({ ...VALID, [field]: value }), [422], field, `${field} = ${JSON.stringify(value)}`);
      }
    });
  });

  it('control characters and lone surrogates in every field', async () => {
    const controls = [...Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)), '\u007F'];
    await leavesNothing(async () => {
      for (const field of FIELDS) {
        for (const control of controls) {
          // Text may hold tab, newline and carriage return (multi-line SMS); nothing else.
          if (field === 'text' && ['\t', '\n', '\r'].includes(control)) continue;
          const answer = await postSend({ ...VALID, [field]: `a${control}b` });
          expectRefusal(answer, field === 'phone' ? [400] : [422], field, `${field} with U+${control.charCodeAt(0).toString(16).padStart(4, '0')}`);
        }
        for (const surrogate of ['\\ud800', '\\udfff', 'a\\ud83d', '\\ude00b']) {
          const body = JSON.stringify({ ...VALID, [field]: 'PLACEHOLDER' }).replace('PLACEHOLDER', surrogate);
          expectRefusal(await postSend(body), field === 'phone' ? [400] : [422], field, `${field} with ${surrogate}`);
        }
      }
      // A sender must be an approved Latin name: other scripts and emoji are refused, not mangled.
      for (const sender of ['Вочи', 'Vochi😀', 'Vöchi', '\u202EVochi']) {
        expectRefusal(await postSend({ ...VALID, sender }), [422], 'sender', sender);
      }
    });
  });

  it('invalid and exotic phone numbers are refused with 400 naming the phone', async () => {
    await leavesNothing(async () => {
      for (const phone of [
        '',
        ' ',
        '+',
        '++375296254070',
        '375296254070',
        '00375296254070',
        '+375',
        '+1',
        '+0',
        '+999999999999',
        // Too short and too long for Belarus. (An unassigned range of possible length is WebSMS's to refuse.)
        '+37529000',
        '+375290000100123',
        '+3752962540701234567',
        'tel:+375296254070',
        "+375296254070' OR '1'='1",
        '+375296254070\r\nX-Injected: 1',
        '+375-abc-def',
        '+١٢٣',
        '-375296254070',
        '+375 29 625 40 70 70 70 70',
      ]) {
        const answer = await postSend({ ...VALID, phone });
        expectRefusal(answer, [400], 'phone', JSON.stringify(phone));
        expect(answer.json.errors, phone).toEqual([expect.objectContaining({ field: 'phone' })]);
      }
    });
  });

  it('hostile callback_url values are refused with 422 naming the field or the setting', async () => {
    const refusedAsUrl: unknown[] = [
      'javascript:alert(1)',
      'file:///etc/passwd',
      'ftp://crm.example/x',
      'gopher://crm.example:70/_x',
      'data:text/plain,hi',
      'http://',
      '//crm.example/x',
      '/relative/path',
      'crm.example/x',
      ' http://crm.example/x',
      'http://crm.example/\u0000x',
      'http://crm.example/a b',
      'http://crm.exаmple/x', // Cyrillic а
      'http://user:pass@crm.example/x',
      'http://u@crm.example/x',
      `http://crm.example/${'a'.repeat(2049)}`,
      '',
      375296254070,
      true,
      ['http://crm.example/x'],
      { href: 'http://crm.example/x' },
    ];
    const refusedAsHost = [
      'http://evil.example/x',
      'http://crm.example.evil.example/x',
      'http://evil.example/?crm.example',
      'http://evil.example#@crm.example',
      'http://crm.example%2f@evil.example/',
      'http://127.0.0.1/x',
      'http://2130706433/x',
      'http://[::1]/x',
      'http://169.254.169.254/latest/meta-data/',
      'http://localhost/x',
    ];
    await leavesNothing(async () => {
      for (const callbackUrl of refusedAsUrl) {
        const answer = await postSend({ ...VALID, callback_url: callbackUrl });
        expectRefusal(answer, [422], /callback_url/, JSON.stringify(callbackUrl).slice(0, 80));
      }
      for (const callbackUrl of refusedAsHost) {
        const answer = await postSend({ ...VALID, callback_url: callbackUrl });
        expectRefusal(answer, [422], /callback_url|CALLBACK_ALLOWED_HOSTS/, callbackUrl);
      }
    });
  });

  it('invalid Idempotency-Key headers are refused with 422 naming the header', async () => {
    await leavesNothing(async () => {
      for (const key of [['k'.repeat(256)], ['caf\u00e9'], ['\u00ff'], ['one', 'two'], ['']]) {
        expectRefusal(await postSend(VALID, { 'idempotency-key': key }), [422], 'Idempotency-Key', JSON.stringify(key));
      }
    });
  });
});

// ── Invalid bodies: generated ────────────────────────────────────────────────────────────────────

const controlChar = fc.constantFrom(...Array.from({ length: 32 }, (_, i) => String.fromCharCode(i)), '\u007F');
const anyText = (maxLength: number) => fc.string({ unit: 'binary', maxLength });
const wrongType = fc.oneof(
  fc.integer(),
  // Finite only: NaN and ±Infinity travel as JSON null, and a null sender or custom_id is valid.
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.boolean(),
  fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 3 }),
);
const withControl = (base: fc.Arbitrary<string>, control: fc.Arbitrary<string>) =>
  fc.tuple(base, control, base).map(([a, c, b]) => `${a}${c}${b}`);
const loneSurrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map((code) => `x${String.fromCharCode(code)}`);

/** How a field is broken, and whether the schema (422) or the phone rule (400) catches it. */
type Corruption = { value: unknown; missing?: boolean; caughtBy: 'schema' | 'phone' };
const schema = (arb: fc.Arbitrary<unknown>) => arb.map((value): Corruption => ({ value, caughtBy: 'schema' }));
const missing = fc.constant<Corruption>({ value: undefined, missing: true, caughtBy: 'schema' });

const corruptions: Record<Field, fc.Arbitrary<Corruption>> = {
  enterprise_number: fc.oneof(
    missing,
    schema(fc.constant(null)),
    schema(wrongType),
    schema(fc.constantFrom('', ' ', '\t')),
    schema(fc.string({ unit: 'grapheme', minLength: 11, maxLength: 40 })),
    schema(withControl(fc.string({ maxLength: 3 }), controlChar)),
    schema(loneSurrogate),
  ),
  phone: fc.oneof(
    missing,
    schema(fc.constant(null)),
    schema(wrongType),
    schema(fc.string({ minLength: 65, maxLength: 100 })),
    // Without a leading '+' no string is an international number; at most 64 characters it passes the schema.
    anyText(64)
      .filter((s) => !s.trim().startsWith('+'))
      .map((value): Corruption => ({ value, caughtBy: 'phone' })),
    withControl(fc.constant('+375'), controlChar).map((value): Corruption => ({ value, caughtBy: 'phone' })),
  ),
  text: fc.oneof(
    missing,
    schema(fc.constant(null)),
    schema(wrongType),
    schema(fc.constant('')),
    schema(fc.string({ unit: 'grapheme-composite', minLength: 1001, maxLength: 1100 })),
    schema(withControl(fc.string({ maxLength: 20 }), controlChar.filter((c) => !['\t', '\n', '\r'].includes(c)))),
    schema(loneSurrogate),
  ),
  sender: fc.oneof(
    schema(wrongType),
    schema(fc.constantFrom('', '  ')),
    schema(fc.string({ minLength: 12, maxLength: 30 }).filter((s) => s.trim() !== '')),
    schema(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 5 }).filter((s) => /[^\x20-\x7E]/.test(s))),
    schema(withControl(fc.string({ maxLength: 3 }), controlChar)),
  ),
  custom_id: fc.oneof(
    schema(wrongType),
    schema(fc.constantFrom('', ' ')),
    schema(fc.string({ unit: 'grapheme-composite', minLength: 21, maxLength: 40 })),
    schema(withControl(fc.string({ maxLength: 5 }), controlChar)),
    schema(loneSurrogate),
  ),
};

const unknownFields = fc.dictionary(
  fc.string({ maxLength: 12 }).filter((k) => !(FIELDS as string[]).includes(k)),
  fc.jsonValue({ maxDepth: 3 }),
  { maxKeys: 4 },
);

describe('POST /send with generated invalid bodies (fast-check)', () => {
  it('refuses every request with at least one broken field, naming each broken field, and leaves nothing behind', async () => {
    const broken = fc
      .record({
        which: fc.subarray(FIELDS, { minLength: 1 }),
        with: fc.record(corruptions),
        extra: unknownFields,
      })
      .map(({ which, with: chosen, extra }) => {
        const body: Record<string, unknown> = { ...extra, ...VALID };
        const bad = new Map<Field, Corruption>();
        for (const field of which) {
          const corruption = chosen[field];
          bad.set(field, corruption);
          if (corruption.missing) delete body[field];
          else body[field] = corruption.value;
        }
        return { body, bad };
      });

    await leavesNothing(async () => {
      await fc.assert(
        fc.asyncProperty(broken, async ({ body, bad }) => {
          const answer = await postSend(body);
          const schemaFields = [...bad].filter(([, c]) => c.caughtBy === 'schema').map(([f]) => f);
          if (schemaFields.length > 0) {
            expectRefusal(answer, [422], undefined, JSON.stringify(body).slice(0, 200));
            const named = (answer.json.errors as Array<{ field: string }>).map((e) => e.field);
            for (const field of schemaFields) {
              expect(named, field).toContain(field);
              expect(answer.json.error).toContain(field);
            }
          } else {
            expectRefusal(answer, [400], 'phone', JSON.stringify(body).slice(0, 200));
          }
        }),
        { numRuns: 1500 },
      );
    });
  });

  it('refuses arbitrary JSON documents and arbitrary bytes with a 4xx envelope, and leaves nothing behind', async () => {
    await leavesNothing(async () => {
      await fc.assert(
        fc.asyncProperty(fc.jsonValue({ maxDepth: 4 }), async (value) => {
          const answer = await postSend(JSON.stringify(value) ?? 'null');
          expectRefusal(answer, [400, 422], undefined, JSON.stringify(value)?.slice(0, 200));
        }),
        { numRuns: 600 },
      );
      await fc.assert(
        fc.asyncProperty(fc.uint8Array({ maxLength: 200 }), async (bytes) => {
          const answer = await postSend(Buffer.from(bytes));
          expectRefusal(answer, [400, 415, 422], undefined, Buffer.from(bytes).toString('hex'));
        }),
        { numRuns: 400 },
      );
    });
  });

  it('refuses any non-JSON Content-Type with 415, whatever the header holds', async () => {
    const headerText = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz/+;=-. "*\t01'.split('')), maxLength: 40 });
    await leavesNothing(async () => {
      await fc.assert(
        fc.asyncProperty(headerText.filter((t) => !/json/i.test(t)), async (type) => {
          const answer = await call('POST', '/send', { headers: { 'content-type': type }, body: JSON.stringify(VALID) });
          expectRefusal(answer, [400, 415], undefined, JSON.stringify(type));
        }),
        { numRuns: 300 },
      );
    });
  });
});

// ── Valid but odd requests: accepted, stored and sent exactly ────────────────────────────────────

/** Characters a text may hold: anything but C0 controls other than tab/newline/CR, and DEL. */
const FORBIDDEN_IN_TEXT = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/;
const FORBIDDEN_IN_LINE = /[\u0000-\u001F\u007F]/;
const HOSTILE_STRINGS = [
  "'; DROP TABLE user_sms_send; --",
  "' OR '1'='1",
  '"; DELETE FROM enterprises; --',
  '1; SELECT pg_sleep(10)',
  '$1 $$ E\'\\x00\'',
  '\\\\ \\" \\n',
  '<script>alert(1)</script>',
  '{{7*7}} ${7*7} #{7*7}',
  '%00 %0d%0a Set-Cookie: a=b',
  'line one\r\nX-Injected: yes\r\n\r\nbody',
  '../../etc/passwd',
  '\u202Eevil\u202C \u200B\u200D \uFEFF',
  'Ζω 東京 Привет مرحبا שלום हिन्दी 😀👨‍👩‍👧‍👦🏳️‍🌈',
  '\uD83D\uDE00'.repeat(5),
  'null',
  'undefined',
];

describe('POST /send with valid but hostile content', () => {
  it('stores and sends SQL, header-injection strings, emoji and mixed scripts exactly, in every free-text field', async () => {
    const accepted: Array<{ id: number; text: string; customId: string | null; sender: string }> = [];
    for (const hostile of HOSTILE_STRINGS) {
      const customId = [...hostile.replace(/[\r\n]/g, ' ')].slice(0, 20).join('');
      const sender = hostile.replace(/[^\x20-\x7E]/g, '').slice(0, 11).trim() || 'Vochi';
      const body = { enterprise_number: '0367', phone: PHONE, text: `${hostile} #${accepted.length}`, sender, custom_id: customId.trim() ? customId : null };
      const asHeader = hostile.replace(/[^\t\x20-\x7E]/g, '?'); // what an HTTP client can send
      const answer = await postSend(body, { prefer: 'respond-async', 'x-service-name': asHeader.slice(0, 60), 'user-agent': asHeader });
      expect([200, 202], `${hostile}: ${answer.text}`).toContain(answer.status);
      accepted.push({ id: answer.json.id as number, text: body.text, customId: body.custom_id, sender });
    }
    for (const message of accepted) {
      const row = await env.db.selectFrom('user_sms_send').selectAll().where('id', '=', String(message.id)).executeTakeFirstOrThrow();
      expect(row.text).toBe(message.text);
      expect(row.custom_id).toBe(message.customId);
      expect(row.sender).toBe(message.sender);
      expect(row.service_name === null || !FORBIDDEN_IN_LINE.test(row.service_name)).toBe(true);
    }
    await allSent(accepted.map((m) => m.id));
    for (const message of accepted) {
      expect(env.sandbox.calls().filter((c) => c.endpoint === 'send/sms' && c.text === message.text), message.text).toHaveLength(1);
    }
    expect(await enterprisesIntact()).toBe(true);
  });

  it('records SQL in enterprise_number as an unknown enterprise (404, documented text) and sends nothing', async () => {
    for (const number of ["' OR 1=1--", '0367;--', "0367'", '*', '%', '0367 ', ' 0367', '０３６７', '😀']) {
      const before = env.sandbox.calls().length;
      const answer = await postSend({ ...VALID, enterprise_number: number });
      expectRefusal(answer, [404], `Enterprise ${number} not found or has no WebSMS configuration`, number);
      const row = await env.db.selectFrom('user_sms_send').selectAll().where('id', '=', String(answer.json.id)).executeTakeFirstOrThrow();
      expect(row).toMatchObject({ enterprise_number: number, status: 'failed' });
      expect(env.sandbox.calls().length).toBe(before);
    }
    expect(await enterprisesIntact()).toBe(true);
  });

  it('accepts the boundary lengths (1000 of text, 11 of sender, 20 of custom_id, 10 of enterprise_number) and ignores unknown fields, even deep ones', async () => {
    const deep = `${'['.repeat(50_000)}${']'.repeat(50_000)}`;
    const answers = [
      await postSend({ ...VALID, text: 'a'.repeat(1000), sender: 'ABCDEFGHIJK', custom_id: 'c'.repeat(20) }),
      await postSend({ ...VALID, text: '👨‍👩‍👧'.repeat(200), custom_id: '😀'.repeat(20) }), // 5 code points each: 1000
      await postSend({ ...VALID, text: 'x\ty\nz\r' }),
      await postSend(JSON.stringify({ ...VALID, text: 'with unknown fields', status: 'success', id: 1, message_id: 42, service_name: 'spoof', attempts: 99, __proto__: { admin: true } })),
      await postSend(`{"enterprise_number":"0367","phone":"${PHONE}","text":"deep unknown","extra":${deep}}`),
    ];
    for (const answer of answers) expect([200, 202], answer.text).toContain(answer.status);
    const spoof = await env.db.selectFrom('user_sms_send').selectAll().where('id', '=', String(answers[3]!.json.id)).executeTakeFirstOrThrow();
    // service_name comes from the token or X-Service-Name, never the body: here, the default.
    expect(spoof).toMatchObject({ status: 'success', service_name: 'user_api_endpoint', attempts: 1 });
    expect(spoof.message_id).not.toBe('42');
    expect(await postSend({ ...VALID, enterprise_number: '0123456789' })).toMatchObject({ status: 404 });
  });

  it('accepts phone numbers in other notations only as possible international numbers, stored in E.164', async () => {
    for (const phone of [
      '+375 29 625-40-70',
      '+375 (29) 625 40 70',
      ' +375296254070 ',
      '+44 7911 123456',
      '+4915112345678',
      '+375\u00A029\u00A06254070',
      '＋３７５２９６２５４０７０',
      // libphonenumber reads a number followed by other text as that number (see the report):
      '+375296254070; DROP TABLE user_sms_send;--',
      '+375296254070 ext. 12',
      '+375296254070\u0000',
    ]) {
      const answer = await postSend({ ...VALID, phone, text: `notation ${phone.replace(/\u0000/g, 'NUL')}` }, { prefer: 'respond-async' });
      expect([200, 202, 400], `${phone}: ${answer.text}`).toContain(answer.status);
      if (answer.status === 400) {
        expectRefusal(answer, [400], 'phone', phone);
        continue;
      }
      const row = await env.db.selectFrom('user_sms_send').select('phone').where('id', '=', String(answer.json.id)).executeTakeFirstOrThrow();
      expect(row.phone, phone).toMatch(/^\+[1-9]\d{7,14}$/);
    }
  });

  it('generated texts, senders and custom_ids (any Unicode) are stored and sent exactly (fast-check)', async () => {
    const character = fc.oneof(fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }), fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }));
    const text = fc.string({ unit: character, minLength: 1, maxLength: 300 });
    const valid = fc.record({
      text: fc.oneof(text, fc.constantFrom(...HOSTILE_STRINGS)).filter((t) => !FORBIDDEN_IN_TEXT.test(t) && codePoints(t) >= 1 && codePoints(t) <= 1000),
      sender: fc.option(fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 11 }).filter((s) => s.trim() !== '')),
      custom_id: fc.option(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 20 }).filter((s) => s.trim() !== '' && !FORBIDDEN_IN_LINE.test(s) && codePoints(s) <= 20)),
    });
    const sent: Array<{ id: number; text: string; sender: string | null; customId: string | null }> = [];
    await fc.assert(
      fc.asyncProperty(valid, async (fields) => {
        const body = { enterprise_number: '0367', phone: PHONE, ...fields };
        const answer = await postSend(body, { prefer: 'respond-async' });
        expect([200, 202], `${JSON.stringify(body)}: ${answer.text}`).toContain(answer.status);
        const row = await env.db.selectFrom('user_sms_send').select(['text', 'sender', 'custom_id']).where('id', '=', String(answer.json.id)).executeTakeFirstOrThrow();
        expect(row).toEqual({ text: fields.text, sender: fields.sender ?? 'Vochi-CRM', custom_id: fields.custom_id });
        sent.push({ id: answer.json.id as number, text: fields.text, sender: fields.sender, customId: fields.custom_id });
      }),
      { numRuns: 250 },
    );
    await allSent(sent.map((m) => m.id));
    const calls = env.sandbox.calls().filter((c) => c.endpoint === 'send/sms');
    for (const message of sent) {
      expect(calls.some((c) => c.text === message.text && c.sender === (message.sender ?? 'Vochi-CRM')), JSON.stringify(message)).toBe(true);
    }
  });

  it('hostile X-Service-Name, User-Agent, X-Real-IP, X-Forwarded-For and Idempotency-Key headers are stored safely or refused (fast-check)', async () => {
    // What Node's HTTP client lets through: tab, printable ASCII, and Latin-1 bytes.
    const headerValue = fc.string({ unit: fc.oneof(fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }), fc.integer({ min: 0x80, max: 0xff }).map((c) => String.fromCharCode(c)), fc.constant('\t')), maxLength: 300 });
    const headers = fc.record({
      'x-service-name': fc.oneof(headerValue, fc.constantFrom(...HOSTILE_STRINGS.map((s) => s.replace(/[^\t\x20-\x7E]/g, '')))),
      'user-agent': headerValue,
      'x-real-ip': fc.oneof(headerValue, fc.ipV4(), fc.ipV6(), fc.constantFrom('127.0.0.1, 10.0.0.1', "1.2.3.4' OR '1'='1", '::ffff:1.2.3.4', '999.1.1.1')),
      'x-forwarded-for': fc.oneof(headerValue, fc.array(fc.ipV4(), { maxLength: 4 }).map((a) => a.join(', '))),
      'idempotency-key': fc.option(headerValue, { nil: undefined }),
    });
    let serial = 0;
    const usedKeys = new Set<string>();
    await fc.assert(
      fc.asyncProperty(headers, async (h) => {
        const sent: Record<string, string> = {};
        // HTTP trims spaces and tabs around a value (not other white space, which JavaScript's trim() would).
        const ows = (v: string) => v.replace(/^[ \t]+|[ \t]+$/g, '');
        for (const [name, value] of Object.entries(h)) if (value !== undefined && ows(value) !== '') sent[name] = value;
        const body = { ...VALID, text: `headers ${++serial}` };
        const answer = await postSend(body, { ...sent, prefer: 'respond-async' });
        const key = sent['idempotency-key'];
        if (key !== undefined && !/^[\x20-\x7E]{1,255}$/.test(ows(key))) {
          expectRefusal(answer, [422], 'Idempotency-Key', JSON.stringify(sent));
          return;
        }
        if (key !== undefined && usedKeys.has(ows(key))) {
          // Generated keys repeat ("6"); every body here is new, so a repeat is a key reused for another message.
          expectRefusal(answer, [422], /Idempotency-Key was already used/, JSON.stringify(sent));
          return;
        }
        if (key !== undefined) usedKeys.add(ows(key));
        expect([200, 202], `${JSON.stringify(sent)}: ${answer.text}`).toContain(answer.status);
        const row = await env.db.selectFrom('user_sms_send').select(['service_name', 'user_agent', 'request_ip']).where('id', '=', String(answer.json.id)).executeTakeFirstOrThrow();
        expect(row.service_name === null || (row.service_name.length <= 50 && !FORBIDDEN_IN_LINE.test(row.service_name))).toBe(true);
        expect(row.user_agent === null || (row.user_agent.length <= 255 && !FORBIDDEN_IN_LINE.test(row.user_agent))).toBe(true);
        // INET: a valid address or nothing (a garbage X-Forwarded-For from the trusted proxy leaves it empty).
        expect(row.request_ip === null || isIP(row.request_ip) !== 0, String(row.request_ip)).toBe(true);
      }),
      { numRuns: 200 },
    );
  });
});

// ── Every other endpoint ─────────────────────────────────────────────────────────────────────────

const HOSTILE_SEGMENTS = [
  '0',
  '-1',
  '1.5',
  '1e3',
  '0x10',
  ' 1',
  'abc',
  "1' OR '1'='1",
  '1;DROP TABLE user_sms_send',
  '99999999999999999999999',
  '9223372036854775808',
  '😀',
  '..',
  '%2e%2e%2f%2e%2e%2fetc%2fpasswd',
  '%00',
  '%',
  '%zz',
  '%E0%A4%A',
  '%C0%AE',
  '%0d%0aX-Injected:%201',
  'x'.repeat(4000),
];

describe('every other endpoint', () => {
  it('answers hostile ids, numbers, report names and queries with a 4xx envelope (or a plain answer), never a 5xx', async () => {
    await leavesNothing(async () => {
      for (const segment of HOSTILE_SEGMENTS) {
        const encoded = /%/.test(segment) ? segment : encodeURIComponent(segment);
        for (const path of [`/messages/${encoded}`, `/enterprises/${encoded}/balance`, `/reports/${encoded}`, `/reports/recent?enterprise=${encoded}&limit=${encoded}`, `/${encoded}`, `/send/${encoded}`]) {
          const answer = await call('GET', path);
          expect(answer.status, `${path}: ${answer.text.slice(0, 200)}`).toBeLessThan(500);
          if (answer.status >= 400) expectRefusal(answer, [400, 404, 405, 413, 414, 415, 422], undefined, path);
        }
      }
      for (const query of ['limit=1&limit=2', 'limit[]=1', 'limit[a]=1', 'enterprise=0367&enterprise=0368', 'limit=-5', 'limit=1e9', 'limit=NaN', 'enterprise=', 'a=%', '%=%']) {
        for (const name of ['recent', 'today', 'enterprise', 'failures', 'spend', 'audit']) {
          const answer = await call('GET', `/reports/${name}?${query}`);
          expect(answer.status, `${name}?${query}: ${answer.text.slice(0, 200)}`).toBeLessThan(500);
        }
      }
    });
  });

  it('answers every method on every path without a 5xx, and never sends', async () => {
    await leavesNothing(async () => {
      for (const method of ['GET', 'HEAD', 'PUT', 'PATCH', 'DELETE', 'OPTIONS', 'TRACE', 'PROPFIND']) {
        for (const path of ['/', '/send', '/health', '/messages/1', '/enterprises/0367/balance', '/reports', '/reports/recent', '/docs', '/openapi.json', '/metrics', '/admin/queues']) {
          const answer = await call(method, path, { headers: JSON_TYPE, body: method === 'GET' || method === 'HEAD' ? undefined : JSON.stringify(VALID) }).catch((e: unknown) => {
            throw new Error(`${method} ${path}: ${String(e)}`);
          });
          expect(answer.status, `${method} ${path}`).toBeLessThan(500);
        }
      }
    });
  });

  it('answers malformed HTTP (bad header bytes, smuggling, huge headers) with a 4xx, never a 5xx', async () => {
    const body = JSON.stringify(VALID);
    const head = (extra: string, length = Buffer.byteLength(body)) => `POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${length}\r\n${extra}\r\n`;
    await leavesNothing(async () => {
      for (const [label, raw] of [
        ['NUL in a header', Buffer.from(`${head('X-Service-Name: a\u0000b\r\n')}${body}`, 'latin1')],
        ['bare CR in a header', Buffer.from(`${head('X-Service-Name: a\rInjected: b\r\n')}${body}`, 'latin1')],
        ['a header without a name', Buffer.from(`${head(': value\r\n')}${body}`, 'latin1')],
        ['Content-Length and Transfer-Encoding (smuggling)', Buffer.from(`${head('Transfer-Encoding: chunked\r\n')}0\r\n\r\n`, 'latin1')],
        ['two different Content-Lengths', Buffer.from(`${head('Content-Length: 5\r\n')}${body}`, 'latin1')],
        ['a 64 KiB header', Buffer.from(`${head(`X-Big: ${'a'.repeat(65_536)}\r\n`)}${body}`, 'latin1')],
        ['a broken chunk size', Buffer.from(`POST /send HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n${body}\r\n0\r\n\r\n`, 'latin1')],
        ['an invalid method', Buffer.from(`P\u00d6ST /send HTTP/1.1\r\nHost: x\r\n\r\n`, 'latin1')],
        ['an unknown HTTP version', Buffer.from('GET /health HTTP/7.3\r\nHost: x\r\n\r\n', 'latin1')],
      ] as const) {
        const status = await rawStatus(raw);
        expect(status, label).toBeGreaterThanOrEqual(400);
        expect(status, label).toBeLessThan(500);
      }
    });
  });

  it('answers generated message ids and enterprise numbers with 400 or 404 (fast-check)', async () => {
    await leavesNothing(async () => {
      await fc.assert(
        fc.asyncProperty(fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }), async (segment) => {
          for (const path of [`/messages/${encodeURIComponent(segment)}`, `/enterprises/${encodeURIComponent(segment)}/balance`]) {
            const answer = await call('GET', path);
            if (segment === '0367' && path.includes('balance')) continue;
            expectRefusal(answer, [400, 404], undefined, path);
          }
        }),
        { numRuns: 300 },
      );
    });
  });
});

describe('afterwards', () => {
  it('is still healthy, still sends, logged no unhandled error, and answered no request with a 5xx', async () => {
    const health = await call('GET', '/health');
    expect(health.status).toBe(200);
    expect(health.json.status).toBe('healthy');
    const send = await postSend({ ...VALID, text: 'still works' });
    expect(send.status).toBe(200);
    expect(send.json.success).toBe(true);
    expect(env.logLines().filter((line) => line.includes('"unhandled error"'))).toEqual([]);
    const serverErrors = [...seen.statuses].filter(([status]) => status >= 500);
    expect(serverErrors).toEqual([]);
    expect(seen.requests).toBeGreaterThan(3000);
    expect(await enterprisesIntact()).toBe(true);
  });
});

/** Waits until every message is final: sent (or refused by WebSMS), not stuck. */
async function allSent(ids: number[]) {
  await eventually(
    async () => {
      const open = await env.db.selectFrom('user_sms_send').select('id').where('id', 'in', ids.map(String)).where('status', 'not in', ['success', 'failed', 'unknown']).execute();
      return open.length === 0 ? true : undefined;
    },
    30_000,
    100,
  );
}

async function enterprisesIntact(): Promise<boolean> {
  const rows = await env.db.selectFrom('enterprises').select('number').orderBy('number').execute();
  return JSON.stringify(rows.map((r) => r.number)) === JSON.stringify(['0367', '0400']);
}

/** Writes raw bytes and returns the status of the answer (the first line), whatever follows. */
function rawStatus(raw: Buffer): Promise<number> {
  const url = new URL(api.url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(url.port), url.hostname);
    let received = '';
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1');
      const match = /^HTTP\/1\.1 (\d{3})/.exec(received);
      if (match) {
        seen.requests += 1;
        seen.statuses.set(Number(match[1]), (seen.statuses.get(Number(match[1])) ?? 0) + 1);
        socket.destroy();
        resolve(Number(match[1]));
      }
    });
    socket.on('error', reject);
    socket.on('close', () => resolve(/^HTTP\/1\.1 (\d{3})/.exec(received) ? Number(/^HTTP\/1\.1 (\d{3})/.exec(received)![1]) : 0));
    socket.write(raw);
  });
}
