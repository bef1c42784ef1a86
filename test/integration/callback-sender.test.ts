import type { LookupAddress } from 'node:dns';
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { networkInterfaces } from 'node:os';
import { Webhook } from 'standardwebhooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addressAllowedForName, parseAllowedHosts } from '../../src/callbacks/callback-hosts.ts';
import { createCallbackSender } from '../../src/callbacks/callback-sender.ts';

// The SSRF rules of a delivery attempt, against real sockets: a listed name is resolved on every
// attempt, every address vetted, and the connection made to the vetted address. Names resolve through
// a stand-in resolver (the system's cannot be pointed anywhere); the receivers are real.

const SECRET = `whsec_${randomBytes(32).toString('base64')}`;

/** An address of this machine that a listed name may reach (not loopback): where "the CRM" listens. */
function reachableAddress(): LookupAddress {
  const found = Object.values(networkInterfaces())
    .flat()
    .find((a) => a && !a.internal && addressAllowedForName(a.address) && !a.address.toLowerCase().startsWith('fe80'));
  if (!found) throw new Error('this test needs a non-loopback network interface (any container or host has one)');
  return { address: found.address, family: found.family === 'IPv6' ? 6 : 4 };
}

interface Hit {
  host: string | undefined;
  body: string;
  verified: boolean;
}

async function receiverOn(address: string): Promise<{ server: Server; port: number; hits: Hit[]; connections: () => number }> {
  const hits: Hit[] = [];
  let connections = 0;
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      let verified = true;
      try {
        new Webhook(SECRET).verify(body, req.headers as Record<string, string>);
      } catch {
        verified = false;
      }
      hits.push({ host: req.headers.host, body, verified });
      res.writeHead(200).end('ok');
    });
  });
  server.on('connection', () => (connections += 1));
  await new Promise<void>((resolve) => server.listen(0, address, resolve));
  return { server, port: (server.address() as AddressInfo).port, hits, connections: () => connections };
}

const event = (url: string) => ({ webhookId: 'msg_test', url, body: '{"type":"message.sent"}' });

describe('a callback delivery attempt', () => {
  let crm: Awaited<ReturnType<typeof receiverOn>>;
  let local: Awaited<ReturnType<typeof receiverOn>>;
  const answers = new Map<string, LookupAddress[][]>();
  const lookups: string[] = [];
  const resolve = (hostname: string) => {
    lookups.push(hostname);
    const queue = answers.get(hostname);
    const next = queue && queue.length > 1 ? queue.shift() : queue?.[0];
    return next ? Promise.resolve(next) : Promise.reject(Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' }));
  };
  let sender: ReturnType<typeof createCallbackSender>;

  beforeAll(async () => {
    const reachable = reachableAddress();
    crm = await receiverOn(reachable.address);
    // Loopback is reachable from here, so a refusal below is the rule's, not the network's.
    local = await receiverOn('127.0.0.1');
    answers.set('crm.test', [[reachable]]);
    answers.set('loopback.test', [[{ address: '127.0.0.1', family: 4 }]]);
    answers.set('metadata.test', [[{ address: '169.254.169.254', family: 4 }]]);
    answers.set('mixed.test', [[reachable, { address: '127.0.0.1', family: 4 }]]);
    answers.set('rebinding.test', [[reachable], [{ address: '127.0.0.1', family: 4 }]]);
    answers.set('reused.test', [[reachable]]);
    sender = createCallbackSender({
      allowedHosts: parseAllowedHosts('crm.test, loopback.test, metadata.test, mixed.test, rebinding.test, reused.test'),
      signingSecret: SECRET,
      timeoutMs: 2_000,
      resolve,
    });
  });

  afterAll(async () => {
    sender?.close();
    for (const r of [crm, local]) await new Promise<void>((done) => (r ? r.server.close(() => done()) : done()));
  });

  it('connects a listed name to the address it resolves to, with the name as Host, signed', async () => {
    const result = await sender.deliver(event(`http://crm.test:${crm.port}/events`));
    expect(result).toEqual({ ok: true, httpStatus: 200 });
    expect(crm.hits).toHaveLength(1);
    expect(crm.hits[0]).toMatchObject({ host: `crm.test:${crm.port}`, verified: true });
  });

  it.each(['loopback.test', 'metadata.test', 'mixed.test'])('refuses %s, a listed name resolving to loopback, link-local or a mix, before connecting', async (name) => {
    const before = local.hits.length;
    const result = await sender.deliver(event(`http://${name}:${local.port}/events`));
    expect(result.ok).toBe(false);
    expect(!result.ok && result.reason).toMatch(/^refused: .* which a listed name may not reach$/);
    expect(local.hits.length).toBe(before);
  });

  it('resolves again on every attempt, so a name that changes to a refused address is refused', async () => {
    const crmBefore = crm.hits.length;
    expect((await sender.deliver(event(`http://rebinding.test:${crm.port}/x`))).ok).toBe(true);
    expect(crm.hits.length).toBe(crmBefore + 1);
    const second = await sender.deliver(event(`http://rebinding.test:${crm.port}/x`));
    expect(second.ok).toBe(false);
    expect(lookups.filter((n) => n === 'rebinding.test')).toHaveLength(2);
  });

  it('keeps a connection to a vetted address for the next attempt, resolving and vetting the name again each time', async () => {
    const connectionsBefore = crm.connections();
    const lookupsBefore = lookups.filter((n) => n === 'reused.test').length;
    for (let i = 0; i < 3; i += 1) expect(await sender.deliver(event(`http://reused.test:${crm.port}/x`))).toEqual({ ok: true, httpStatus: 200 });
    expect(crm.connections() - connectionsBefore).toBe(1);
    expect(lookups.filter((n) => n === 'reused.test').length - lookupsBefore).toBe(3);
  });

  it('refuses a name that resolves to a refused address even while a listed IP address keeps a connection to that receiver', async () => {
    const both = createCallbackSender({ allowedHosts: parseAllowedHosts(`127.0.0.1:${local.port}, loopback.test`), signingSecret: SECRET, timeoutMs: 2_000, resolve });
    try {
      expect(await both.deliver(event(`http://127.0.0.1:${local.port}/x`))).toEqual({ ok: true, httpStatus: 200 });
      const before = local.hits.length;
      const result = await both.deliver(event(`http://loopback.test:${local.port}/x`));
      expect(!result.ok && result.reason).toMatch(/^refused: /);
      expect(local.hits.length).toBe(before);
    } finally {
      both.close();
    }
  });

  it('never resolves or connects to a host that is not listed', async () => {
    const before = lookups.length;
    const result = await sender.deliver(event(`http://127.0.0.1:${local.port}/x`));
    expect(result).toEqual({ ok: false, httpStatus: null, reason: 'host not in CALLBACK_ALLOWED_HOSTS' });
    expect((await sender.deliver(event(`http://unlisted.test:${crm.port}/x`))).ok).toBe(false);
    expect(lookups.length).toBe(before);
  });

  it('reports a name that does not resolve as a failed attempt', async () => {
    const unresolvable = createCallbackSender({ allowedHosts: parseAllowedHosts('nowhere.test'), signingSecret: SECRET, timeoutMs: 1_000, resolve });
    try {
      const result = await unresolvable.deliver(event('http://nowhere.test/x'));
      expect(!result.ok && result.reason).toMatch(/ENOTFOUND/);
    } finally {
      unresolvable.close();
    }
  });
});

describe('a callback delivery attempt, against receivers that misbehave', () => {
  const servers: Server[] = [];

  /** A receiver on loopback, listed by its address; counts the connections and requests it gets. */
  async function receiver(handle: (req: IncomingMessage, res: ServerResponse) => void, address = '127.0.0.1', port = 0) {
    const seen = { connections: 0, requests: [] as string[] };
    const server = createServer((req, res) => {
      seen.requests.push(req.url ?? '');
      handle(req, res);
    });
    server.on('connection', () => (seen.connections += 1));
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(port, address, resolve));
    return { seen, port: (server.address() as AddressInfo).port };
  }

  const senderFor = (hosts: string, timeoutMs = 2_000, resolve?: (hostname: string) => Promise<LookupAddress[]>) =>
    createCallbackSender({ allowedHosts: parseAllowedHosts(hosts), signingSecret: SECRET, timeoutMs, ...(resolve ? { resolve } : {}) });

  afterAll(async () => {
    for (const server of servers) {
      server.closeAllConnections();
      await new Promise<void>((done) => server.close(() => done()));
    }
  });

  it('connects to the vetted address even where the system resolver would send the name elsewhere', async () => {
    const reachable = reachableAddress();
    const crm = await receiver((_req, res) => res.writeHead(204).end(), reachable.address);
    // What the system resolves localhost to, listening on the same port: where a second lookup would go.
    const decoy = await receiver((_req, res) => res.writeHead(204).end(), '127.0.0.1', crm.port);
    const sender = senderFor('localhost', 2_000, () => Promise.resolve([reachable]));
    try {
      expect(await sender.deliver(event(`http://localhost:${crm.port}/events`))).toEqual({ ok: true, httpStatus: 204 });
      expect(crm.seen.requests).toEqual(['/events']);
      expect(decoy.seen.connections).toBe(0);
    } finally {
      sender.close();
    }
  });

  it('does not follow a redirect: a 3xx is the failed attempt', async () => {
    const elsewhere = await receiver((_req, res) => res.writeHead(204).end());
    const redirecting = await receiver((_req, res) => res.writeHead(302, { location: `http://127.0.0.1:${elsewhere.port}/taken` }).end());
    const sender = senderFor(`127.0.0.1`);
    try {
      expect(await sender.deliver(event(`http://127.0.0.1:${redirecting.port}/events`))).toEqual({
        ok: false,
        httpStatus: 302,
        reason: 'HTTP 302 (redirects are not followed)',
      });
      expect(redirecting.seen.requests).toEqual(['/events']);
      expect(elsewhere.seen.connections).toBe(0);
    } finally {
      sender.close();
    }
  });

  it.each([
    ['response', (_req: IncomingMessage, _res: ServerResponse) => undefined],
    ['read', (_req: IncomingMessage, res: ServerResponse) => void res.writeHead(200, { 'content-length': '100' }).write('part of it')],
  ])('gives up on a receiver that hangs in the %s phase after the timeout, naming no path or query', async (phase, handle) => {
    const hanging = await receiver(handle);
    const sender = senderFor('127.0.0.1', 300);
    try {
      const started = Date.now();
      const result = await sender.deliver(event(`http://127.0.0.1:${hanging.port}/hook/secret-path?token=secret-token`));
      const took = Date.now() - started;
      expect(result).toEqual({ ok: false, httpStatus: null, reason: `no answer within 300 ms (${phase} phase)` });
      expect(took).toBeGreaterThanOrEqual(290);
      expect(took).toBeLessThan(1_500);
    } finally {
      sender.close();
    }
  });

  it('bounds the lookup by the same timeout', async () => {
    const sender = senderFor('slow-dns.test', 200, () => new Promise<LookupAddress[]>(() => undefined));
    try {
      expect(await sender.deliver(event('http://slow-dns.test/x'))).toEqual({ ok: false, httpStatus: null, reason: 'no answer within 200 ms (lookup phase)' });
    } finally {
      sender.close();
    }
  });

  it('names the code of a connection that fails, never the path or query', async () => {
    // A port something listened on a moment ago, and nothing does now.
    const gone = createServer();
    await new Promise<void>((resolve) => gone.listen(0, '127.0.0.1', resolve));
    const { port } = gone.address() as AddressInfo;
    await new Promise<void>((done) => gone.close(() => done()));
    const sender = senderFor('127.0.0.1');
    try {
      const result = await sender.deliver(event(`http://127.0.0.1:${port}/hook/secret-path?token=secret-token`));
      expect(result).toEqual({ ok: false, httpStatus: null, reason: 'connection failed (ECONNREFUSED)' });
    } finally {
      sender.close();
    }
  });

  it('refuses an answer whose headers exceed 16 KiB', async () => {
    const big = await receiver((req, res) => res.writeHead(200, { 'x-filler': 'x'.repeat(Number(new URL(req.url ?? '/', 'http://x').searchParams.get('n'))) }).end());
    const sender = senderFor('127.0.0.1');
    try {
      expect(await sender.deliver(event(`http://127.0.0.1:${big.port}/?n=12000`))).toEqual({ ok: true, httpStatus: 200 });
      const result = await sender.deliver(event(`http://127.0.0.1:${big.port}/?n=20000`));
      expect(result).toEqual({ ok: false, httpStatus: null, reason: 'connection failed (UND_ERR_HEADERS_OVERFLOW)' });
    } finally {
      sender.close();
    }
  });

  it('reads and drops an answer’s body, and keeps the connection for the next attempt', async () => {
    const chatty = await receiver((_req, res) => res.writeHead(200).end('x'.repeat(256 * 1024)));
    const sender = senderFor('127.0.0.1');
    try {
      for (let i = 0; i < 3; i += 1) expect(await sender.deliver(event(`http://127.0.0.1:${chatty.port}/x`))).toEqual({ ok: true, httpStatus: 200 });
      expect(chatty.seen.requests).toHaveLength(3);
      expect(chatty.seen.connections).toBe(1);
    } finally {
      sender.close();
    }
  });
});
