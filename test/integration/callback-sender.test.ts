import type { LookupAddress } from 'node:dns';
import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
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
      expect(result).toMatchObject({ ok: false, httpStatus: null });
      expect(!result.ok && result.reason).toMatch(/ENOTFOUND/);
    } finally {
      unresolvable.close();
    }
  });
});
