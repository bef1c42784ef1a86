import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { Worker } from 'node:worker_threads';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  createWebsmsClient,
  WebsmsError,
  type LookupOutcome,
  type SendOutcome,
  type WebsmsClient,
  type WebsmsCredentials,
} from '../../src/websms/client.ts';
import { sandboxTriggers, startSandbox, type SandboxServer } from '../../src/websms/sandbox.ts';

// A key with characters that URL encoding changes, so that an encoded copy would be caught too.
const credentials: WebsmsCredentials = { user: 'shop@example.com', apiKey: 'S3cr3t+key/&=ü 42' };
const keyForms = [credentials.apiKey, encodeURIComponent(credentials.apiKey), new URLSearchParams({ k: credentials.apiKey }).toString().slice(2)];
const sms = { msisdn: '375296254070', text: 'Your code is 1234', sender: 'Shop' };
// Normal calls get a generous budget; only calls meant to time out use the short one.
const patientMs = 10_000;
const impatientMs = 300;
// Asymmetric matchers are typed `any`; typed here once.
const anyNumber: unknown = expect.any(Number);
const containing = (text: string): unknown => expect.stringContaining(text);

let sandbox: SandboxServer;
const clients: WebsmsClient[] = [];
let nextId = 0;

beforeAll(async () => {
  sandbox = await startSandbox({ accounts: [credentials] });
});
afterEach(() => {
  sandbox.setLatency(0);
});
afterAll(async () => {
  for (const client of clients) client.close();
  await sandbox.close();
});

function clientFor(baseUrl: string, options: { timeoutMs?: number; method?: 'GET' | 'POST' } = {}): WebsmsClient {
  const client = createWebsmsClient({ baseUrl, timeoutMs: options.timeoutMs ?? patientMs, ...(options.method ? { method: options.method } : {}) });
  clients.push(client);
  return client;
}

function uniqueCustomId(): string {
  return `t${process.pid}-${nextId++}`;
}

/** Fails the test if the API key, raw or URL-encoded, appears anywhere in what the client returned. */
function expectNoKey(value: unknown): void {
  const text = value instanceof Error ? `${value.message}\n${value.stack}\n${JSON.stringify(value)}` : JSON.stringify(value);
  for (const form of keyForms) expect(text).not.toContain(form);
}

async function send(client: WebsmsClient, overrides: Partial<typeof sms> & { customId?: string } = {}): Promise<SendOutcome> {
  const outcome = await client.send(credentials, { ...sms, customId: uniqueCustomId(), ...overrides });
  expectNoKey(outcome);
  return outcome;
}

async function lookup(client: WebsmsClient, customId: string, who = credentials): Promise<LookupOutcome> {
  const outcome = await client.lookupByCustomId(who, customId);
  expectNoKey(outcome);
  return outcome;
}

async function balanceError(client: WebsmsClient, who = credentials): Promise<WebsmsError> {
  const error = await client.balance(who).then(
    () => null,
    (thrown: unknown) => thrown,
  );
  expect(error).toBeInstanceOf(WebsmsError);
  expectNoKey(error);
  return error as WebsmsError;
}

describe.each(['GET', 'POST'] as const)('WebSMS client against the sandbox (%s)', (method) => {
  const client = () => clientFor(sandbox.url, { method });
  const impatient = () => clientFor(sandbox.url, { method, timeoutMs: impatientMs });

  it('returns accepted with message id, price, parts and amount for a normal send', async () => {
    const customId = uniqueCustomId();
    const outcome = await send(client(), { customId, text: 'ж'.repeat(71) });
    expect(outcome).toMatchObject({ kind: 'accepted', messageId: anyNumber, price: 0.014732, parts: 2, amount: 0.029464 });
    expect(sandbox.acceptedSends().filter((call) => call.customId === customId)).toHaveLength(1);
  });

  it.each([
    { name: 'invalidCredentials', msisdn: sandboxTriggers.invalidCredentials, expected: { kind: 'rejected', code: 4, retryable: false } },
    { name: 'invalidNumber', msisdn: sandboxTriggers.invalidNumber, expected: { kind: 'rejected', code: 100, retryable: false } },
    { name: 'rateLimited', msisdn: sandboxTriggers.rateLimited, expected: { kind: 'rejected', code: 7, retryable: true } },
    { name: 'rateLimitedOnce', msisdn: sandboxTriggers.rateLimitedOnce, expected: { kind: 'rejected', code: 7, retryable: true } },
    { name: 'internalErrorOnce', msisdn: sandboxTriggers.internalErrorOnce, expected: { kind: 'rejected', code: 1, retryable: true } },
    { name: 'http500', msisdn: sandboxTriggers.http500, expected: { kind: 'unknown' } },
    { name: 'acceptedThenHttp500', msisdn: sandboxTriggers.acceptedThenHttp500, expected: { kind: 'unknown' } },
    { name: 'garbage', msisdn: sandboxTriggers.garbage, expected: { kind: 'unknown' } },
  ])('classifies the $name trigger as $expected.kind', async ({ msisdn, expected }) => {
    expect(await send(client(), { msisdn })).toMatchObject(expected);
  });

  it('classifies both hang triggers (408, 409) as unknown once the response timeout passes', async () => {
    for (const msisdn of [sandboxTriggers.hangOnce, sandboxTriggers.acceptedThenHangOnce]) {
      expect(await send(impatient(), { msisdn }), msisdn).toMatchObject({ kind: 'unknown', reason: containing('response') });
    }
  });

  it('gets an accepted resend after a retryable once-only rejection (1, 7) with the same custom_id', async () => {
    for (const msisdn of [sandboxTriggers.internalErrorOnce, sandboxTriggers.rateLimitedOnce]) {
      const customId = uniqueCustomId();
      expect(await send(client(), { msisdn, customId })).toMatchObject({ kind: 'rejected', retryable: true });
      expect(await send(client(), { msisdn, customId })).toMatchObject({ kind: 'accepted' });
    }
  });

  it('finds the message after a hang past acceptance (409) and not after a hang before it (408)', async () => {
    const acceptedId = uniqueCustomId();
    const neverAcceptedId = uniqueCustomId();
    expect(await send(impatient(), { msisdn: sandboxTriggers.acceptedThenHangOnce, customId: acceptedId })).toMatchObject({ kind: 'unknown' });
    expect(await send(impatient(), { msisdn: sandboxTriggers.hangOnce, customId: neverAcceptedId })).toMatchObject({ kind: 'unknown' });

    expect(await lookup(client(), acceptedId)).toMatchObject({ kind: 'found', statusCode: 3, statusName: 'Delivered' });
    expect(await lookup(client(), neverAcceptedId)).toEqual({ kind: 'not-found' });
    // Only now is a resend safe, and it goes through.
    expect(await send(client(), { msisdn: sandboxTriggers.hangOnce, customId: neverAcceptedId })).toMatchObject({ kind: 'accepted' });
  });

  it('finds the message after a 500 that followed acceptance (501) and not after one that did not (500)', async () => {
    const acceptedId = uniqueCustomId();
    const neverAcceptedId = uniqueCustomId();
    await send(client(), { msisdn: sandboxTriggers.acceptedThenHttp500, customId: acceptedId });
    await send(client(), { msisdn: sandboxTriggers.http500, customId: neverAcceptedId });
    expect(await lookup(client(), acceptedId)).toMatchObject({ kind: 'found', statusCode: 3 });
    expect(await lookup(client(), neverAcceptedId)).toEqual({ kind: 'not-found' });
  });

  it('reads the balance', async () => {
    expect(await client().balance(credentials)).toEqual({ sms: 100, viber: 0 });
  });
});

describe('WebSMS client failures around the sandbox', () => {
  it('throws WebsmsError websms_4, not retryable, for a balance with a wrong key', async () => {
    const error = await balanceError(clientFor(sandbox.url), { user: credentials.user, apiKey: 'wrong' });
    expect(error).toMatchObject({ code: 'websms_4', retryable: false });
  });

  it("throws WebsmsError 'timeout', retryable, when the balance answer is slower than timeoutMs", async () => {
    sandbox.setLatency(2_000);
    const error = await balanceError(clientFor(sandbox.url, { timeoutMs: impatientMs }));
    expect(error).toMatchObject({ code: 'timeout', retryable: true });
  });

  it('classifies a send slower than timeoutMs as unknown, since WebSMS may still process it', async () => {
    sandbox.setLatency(2_000);
    expect(await send(clientFor(sandbox.url, { timeoutMs: impatientMs }))).toMatchObject({ kind: 'unknown' });
  });

  it('fails a lookup with a wrong key instead of reporting the message as not found', async () => {
    expect(await lookup(clientFor(sandbox.url), 'anything', { user: credentials.user, apiKey: 'wrong' })).toMatchObject({
      kind: 'failed',
      reason: containing('WebSMS error 4'),
    });
  });

  it('refuses at creation a base URL whose user info, query or fragment a call would drop', () => {
    for (const baseUrl of ['http://user:secret@127.0.0.1/api', 'http://127.0.0.1/api?x=1', 'http://127.0.0.1/api#x', 'not a url']) {
      expect(() => createWebsmsClient({ baseUrl, timeoutMs: patientMs }), baseUrl).toThrow();
    }
  });

  it('tolerates a trailing slash on the base URL', async () => {
    expect(await send(clientFor(`${sandbox.url}/`))).toMatchObject({ kind: 'accepted' });
  });

  it('classifies a refused connection as not-sent, and balance() throws unreachable', async () => {
    const closed = await startSandbox();
    const baseUrl = closed.url;
    await closed.close();
    const client = clientFor(baseUrl);
    expect(await send(client)).toMatchObject({ kind: 'not-sent', reason: containing('ECONNREFUSED') });
    expect(await lookup(client, 'x')).toMatchObject({ kind: 'failed' });
    expect(await balanceError(client)).toMatchObject({ code: 'unreachable', retryable: true });
  });

  it('classifies a host name that cannot resolve as not-sent', async () => {
    // .invalid never resolves (RFC 2606); without a resolver this ends as a lookup timeout, also not-sent.
    expect(await send(clientFor('http://websms.invalid/api'))).toMatchObject({ kind: 'not-sent' });
  });
});

// Provider quirks the sandbox does not produce, served by a scripted server.
describe('WebSMS client against provider quirks', () => {
  interface Seen {
    method: string;
    url: string;
    contentType: string | undefined;
    body: string;
  }
  let stub: http.Server;
  let stubUrl: string;
  let seen: Seen[] = [];
  let answer: (request: Seen, response: http.ServerResponse) => void = () => undefined;

  beforeAll(async () => {
    stub = http.createServer((request, response) => {
      const chunks: Buffer[] = [];
      request.on('data', (chunk: Buffer) => chunks.push(chunk));
      request.on('end', () => {
        const entry = { method: request.method ?? '', url: request.url ?? '', contentType: request.headers['content-type'], body: Buffer.concat(chunks).toString() };
        seen.push(entry);
        answer(entry, response);
      });
    });
    await new Promise<void>((resolve) => stub.listen(0, '127.0.0.1', resolve));
    stubUrl = `http://127.0.0.1:${(stub.address() as AddressInfo).port}/api`;
  });
  afterEach(() => {
    seen = [];
  });
  afterAll(async () => {
    stub.closeAllConnections();
    await new Promise((resolve) => stub.close(resolve));
  });

  function answerWith(status: number, body: string, headers: Record<string, string> = {}): void {
    answer = (_request, response) => {
      response.writeHead(status, headers);
      response.end(body);
    };
  }
  const sendToStub = (method: 'GET' | 'POST' = 'GET') => send(clientFor(stubUrl, { method }));

  it('sends the documented parameters as a GET query string by default and as a urlencoded POST form on request', async () => {
    answerWith(200, '{"status":true,"message_id":1}');
    await send(clientFor(stubUrl), { customId: 'wire-1' });
    await send(clientFor(stubUrl, { method: 'POST' }), { customId: 'wire-1' });
    const expected = { user: credentials.user, apikey: credentials.apiKey, ...sms, custom_id: 'wire-1' };
    const [get, post] = seen;
    expect(get?.method).toBe('GET');
    expect(get?.url.startsWith('/api/send/sms?')).toBe(true);
    expect(Object.fromEntries(new URLSearchParams(get?.url.split('?')[1]))).toEqual(expected);
    expect(post?.method).toBe('POST');
    expect(post?.url).toBe('/api/send/sms');
    expect(post?.contentType).toBe('application/x-www-form-urlencoded');
    expect(Object.fromEntries(new URLSearchParams(post?.body))).toEqual(expected);
  });

  it('classifies HTTP 429 as not-sent', async () => {
    answerWith(429, 'Too Many Requests');
    expect(await sendToStub()).toMatchObject({ kind: 'not-sent' });
  });

  it('classifies a 4xx without a WebSMS answer as unknown', async () => {
    answerWith(404, '<html>Not Found</html>', { 'content-type': 'text/html' });
    expect(await sendToStub()).toMatchObject({ kind: 'unknown', reason: containing('404') });
  });

  it("classifies a 4xx carrying WebSMS's own status:false answer as rejected", async () => {
    answerWith(403, '{"status":false,"error":{"code":5,"description":"IP not allowed"}}');
    expect(await sendToStub()).toMatchObject({ kind: 'rejected', code: 5, retryable: false });
  });

  it('classifies a 5xx as unknown even with a status:false body', async () => {
    answerWith(502, '{"status":false,"error":{"code":4,"description":"Invalid user or apikey"}}');
    expect(await sendToStub()).toMatchObject({ kind: 'unknown' });
  });

  it('does not follow a redirect, which would repeat the send elsewhere, and classifies it as unknown', async () => {
    answer = (request, response) => {
      response.writeHead(request.url.startsWith('/elsewhere') ? 200 : 302, { location: '/elsewhere/send/sms' });
      response.end('{"status":true,"message_id":2}');
    };
    expect(await sendToStub()).toMatchObject({ kind: 'unknown', reason: containing('302') });
    expect(seen).toHaveLength(1);
  });

  it('classifies a connection reset after the request arrived as unknown', async () => {
    answer = (_request, response) => response.socket?.destroy();
    expect(await sendToStub()).toMatchObject({ kind: 'unknown' });
    expect(await sendToStub('POST')).toMatchObject({ kind: 'unknown' });
  });

  it('classifies JSON without a boolean status, and status:true without a message_id, as unknown', async () => {
    for (const body of ['{"status":"ok","message_id":3}', '[]', '', '{"status":true}']) {
      answerWith(200, body);
      expect(await sendToStub(), body).toMatchObject({ kind: 'unknown' });
    }
  });

  it('reads numeric strings and a plain-string error; a string error without a code is final', async () => {
    answerWith(200, '{"status":true,"message_id":"76443782","price":"0.014732","parts":"1","amount":"0.014732"}');
    expect(await sendToStub()).toMatchObject({ kind: 'accepted', messageId: 76443782, price: 0.014732, parts: 1, amount: 0.014732 });
    answerWith(200, '{"status":false,"error":{"code":"7","description":"Too many requests"}}');
    expect(await sendToStub()).toMatchObject({ kind: 'rejected', code: 7, retryable: true });
    answerWith(200, '{"status":false,"error":"Something went wrong"}');
    expect(await sendToStub()).toMatchObject({ kind: 'rejected', code: 0, description: 'Something went wrong', retryable: false });
  });

  it('scrubs the API key from a provider answer that echoes it, in the description and the raw response', async () => {
    answer = (request, response) => {
      const key = new URLSearchParams(request.url.split('?')[1]).get('apikey');
      response.writeHead(200);
      response.end(JSON.stringify({ status: false, error: { code: 4, description: `Invalid apikey ${key}` } }));
    };
    // send() itself checks that no form of the key is in the outcome.
    expect(await sendToStub()).toMatchObject({ kind: 'rejected', code: 4, description: 'Invalid apikey [redacted]' });
  });

  it('reports a lookup as not-found only when WebSMS clearly says so', async () => {
    const cases: [string, LookupOutcome['kind']][] = [
      ['{"status":true,"message_status":{"code":false,"name":"Not found"}}', 'not-found'],
      ['{"status":false,"error":{"code":2,"description":"Not found"}}', 'not-found'],
      ['{"status":false,"error":{"code":4,"description":"User not found"}}', 'failed'],
      ['{"status":true,"message_status":{"code":"3","name":"Delivered"}}', 'found'],
      ['{"status":true}', 'failed'],
      ['<html>', 'failed'],
    ];
    for (const [body, kind] of cases) {
      answerWith(200, body);
      expect((await lookup(clientFor(stubUrl), 'c-1')).kind, body).toBe(kind);
    }
    answerWith(503, '{"status":true,"message_status":{"code":3,"name":"Delivered"}}');
    expect(await lookup(clientFor(stubUrl), 'c-1')).toMatchObject({ kind: 'failed', reason: containing('503') });
  });

  it('throws bad_response for a balance answer that is not a WebSMS answer', async () => {
    answerWith(200, '{"status":true}');
    expect(await balanceError(clientFor(stubUrl))).toMatchObject({ code: 'bad_response' });
    answerWith(500, 'oops');
    expect(await balanceError(clientFor(stubUrl))).toMatchObject({ code: 'bad_response', retryable: true });
  });
});

// What the client does on the wire below HTTP: connections that never open, requests that get no
// answer, connections kept, dropped or closed.
describe('WebSMS client transport', () => {
  const servers: net.Server[] = [];
  const sockets = new Set<net.Socket>();

  afterAll(async () => {
    for (const socket of sockets) socket.destroy();
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))));
  });

  /** A TCP server on 127.0.0.1 that hands every accepted connection to `onSocket`. */
  async function tcpServer(onSocket: (socket: net.Socket) => void): Promise<{ server: net.Server; url: string }> {
    const server = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => undefined);
      onSocket(socket);
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/api` };
  }

  const once = <T>(emitter: NodeJS.EventEmitter, event: string) => new Promise<T>((resolve) => emitter.once(event, resolve));

  it.each(['GET', 'POST'] as const)('classifies a request that got no answer as unknown, in the response phase (%s)', async (method) => {
    let received = '';
    const { url } = await tcpServer((socket) => socket.on('data', (chunk: Buffer) => (received += chunk.toString())));
    const client = clientFor(url, { method, timeoutMs: impatientMs });
    expect(await send(client)).toEqual({ kind: 'unknown', reason: 'timed out waiting for WebSMS (response phase)' });
    // It was out: the server had the whole request.
    expect(received).toContain(`${method} /api/send/sms`);
    expect(await lookup(client, 'x')).toMatchObject({ kind: 'failed', reason: containing('response phase') });
    expect(await balanceError(client)).toMatchObject({ code: 'timeout', retryable: true });
  });

  it('classifies an answer whose body stops coming as unknown, in the read phase', async () => {
    const { url } = await tcpServer((socket) =>
      socket.once('data', () => socket.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{"status":true,')),
    );
    expect(await send(clientFor(url, { timeoutMs: impatientMs }))).toEqual({ kind: 'unknown', reason: 'timed out waiting for WebSMS (read phase)' });
  });

  it('classifies a connection closed once the request was written as unknown, naming the code', async () => {
    const { url } = await tcpServer((socket) => socket.once('data', () => socket.resetAndDestroy()));
    expect(await send(clientFor(url))).toMatchObject({ kind: 'unknown', reason: expect.stringMatching(/^connection to WebSMS failed \([A-Z_]+\)$/) as unknown });
    const { url: endsUrl } = await tcpServer((socket) => socket.once('data', () => socket.end()));
    expect(await send(clientFor(endsUrl))).toMatchObject({ kind: 'unknown', reason: expect.stringMatching(/^connection to WebSMS failed \([A-Z_]+\)$/) as unknown });
  });

  it('classifies a refused connection as not-sent with the code, and a name that does not resolve as not-sent', async () => {
    const { server, url } = await tcpServer(() => undefined);
    await new Promise((resolve) => server.close(resolve));
    expect(await send(clientFor(url, { method: 'POST' }))).toEqual({ kind: 'not-sent', reason: 'could not connect to WebSMS (ECONNREFUSED)' });
    expect(await send(clientFor('http://websms.invalid/api'))).toMatchObject({ kind: 'not-sent', reason: expect.stringMatching(/^(could not connect to WebSMS \((ENOTFOUND|EAI_AGAIN)\)|timed out waiting for WebSMS \(connect phase\))$/) as unknown });
  });

  it('gives up on a connection that does not open within the set-up bound, as not-sent', async () => {
    // A listener that never accepts: once its accept queue (backlog 1) is full, the kernel drops
    // further SYNs, so a new connection neither opens nor fails.
    const release = new Int32Array(new SharedArrayBuffer(4));
    const worker = new Worker(
      `const net = require('node:net');
       const { parentPort, workerData } = require('node:worker_threads');
       const server = net.createServer();
       server.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
         parentPort.postMessage(server.address().port);
         Atomics.wait(workerData, 0, 0);
         server.close();
       });`,
      { eval: true, workerData: release },
    );
    try {
      const port = await once<number>(worker, 'message');
      for (let queued = 0; queued < 2; queued++) {
        const filler = net.connect(port, '127.0.0.1');
        sockets.add(filler);
        filler.on('error', () => undefined);
        await once(filler, 'connect');
      }
      const started = Date.now();
      expect(await send(clientFor(`http://127.0.0.1:${port}/api`))).toEqual({ kind: 'not-sent', reason: 'timed out waiting for WebSMS (connect phase)' });
      expect(Date.now() - started).toBeLessThan(patientMs);
    } finally {
      Atomics.store(release, 0, 1);
      Atomics.notify(release, 0);
      await worker.terminate();
    }
  });

  it('reuses its connections across calls, and drops each after about 4 s idle', async () => {
    const answer = '{"status":true,"message_id":5}';
    const lastAnswered = new Map<net.Socket, number>();
    const server = http.createServer((request, response) => {
      request.resume();
      request.on('end', () => response.end(answer));
      response.on('finish', () => lastAnswered.set(request.socket, Date.now()));
    });
    // The server would keep them a minute: closing them is the client's doing.
    server.keepAliveTimeout = 60_000;
    const idleFor: Promise<number>[] = [];
    server.on('connection', (socket: net.Socket) => {
      sockets.add(socket);
      idleFor.push(once(socket, 'close').then(() => Date.now() - (lastAnswered.get(socket) ?? 0)));
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = clientFor(`http://127.0.0.1:${(server.address() as AddressInfo).port}/api`, { method: 'POST' });
    const calls = 6;
    for (let i = 0; i < calls; i++) expect(await send(client)).toMatchObject({ kind: 'accepted', messageId: 5 });
    // Calls one after another share a connection or two; without keep-alive each would open its own.
    expect(idleFor.length).toBeLessThanOrEqual(2);
    for (const idle of await Promise.all(idleFor)) {
      expect(idle).toBeGreaterThan(3_500);
      expect(idle).toBeLessThan(5_000);
    }
  });

  it('sends on a new connection, once, when the kept one was closed by the server while idle', async () => {
    let requests = 0;
    const server = http.createServer((request, response) => {
      requests++;
      request.resume();
      request.on('end', () => response.end('{"status":true,"message_id":6}'));
    });
    const opened: net.Socket[] = [];
    server.on('connection', (socket: net.Socket) => {
      sockets.add(socket);
      opened.push(socket);
    });
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const client = clientFor(`http://127.0.0.1:${(server.address() as AddressInfo).port}/api`);
    expect(await send(client)).toMatchObject({ kind: 'accepted' });
    // The server ends the idle connection; it is closed once the client has answered the FIN with its own.
    const [kept] = opened as [net.Socket];
    kept.end();
    await once(kept, 'close');
    expect(await send(client)).toMatchObject({ kind: 'accepted' });
    expect(requests).toBe(2);
    expect(opened).toHaveLength(2);
  });

  it('keeps working after close(), on new connections', async () => {
    const client = clientFor(sandbox.url);
    expect(await send(client)).toMatchObject({ kind: 'accepted' });
    client.close();
    expect(await send(client)).toMatchObject({ kind: 'accepted' });
  });
});
