import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction, Socket } from 'node:net';
import got, { RequestError, TimeoutError } from 'got';
import { Webhook } from 'standardwebhooks';
import { addressAllowedForName, allowedTarget, CALLBACK_HOSTS_SETTING, type AllowedHost } from './callback-hosts.ts';

// One delivery attempt of a signed event (Standard Webhooks): the host is checked against the allowed
// list, a listed name is resolved and every address it resolves to vetted (callback-hosts.ts) on every
// attempt, and the connection is made to the vetted addresses themselves, by the lookup the socket
// uses, so nothing can resolve differently between the check and the connection. Redirects are never
// followed.
//
// Connections are kept alive between attempts (a callback per message change, two or more per
// message: a new TCP connection each time cost more CPU than the rest of the attempt). The pool is
// keyed by what was vetted: one agent per protocol and set of addresses a name resolved to (or per
// listed IP address), so an attempt reuses a pooled socket only when it goes to an address vetted for
// this very attempt. A name that now resolves elsewhere gets a new connection, and one that resolves
// to a refused address is refused before any pooled socket is looked at.

export interface SignedEvent {
  webhookId: string;
  url: string;
  body: string;
}

export type AttemptResult =
  | { ok: true; httpStatus: number }
  /** not delivered; `reason` names the cause, never the URL's path or query (they may carry a token) */
  | { ok: false; httpStatus: number | null; reason: string };

export interface CallbackSender {
  deliver(event: SignedEvent): Promise<AttemptResult>;
  close(): void;
}

export interface CallbackSenderOptions {
  allowedHosts: readonly AllowedHost[];
  /** `whsec_…` */
  signingSecret: string;
  timeoutMs: number;
  /** for tests: how names are resolved (default: the system resolver, every address) */
  resolve?: (hostname: string) => Promise<LookupAddress[]>;
}

const systemResolve = (hostname: string) =>
  new Promise<LookupAddress[]>((resolve, reject) => {
    dnsLookup(hostname, { all: true, verbatim: true }, (error, addresses) => (error ? reject(error) : resolve(addresses)));
  });

/** Idle pooled connections close after this: below the 5 s keep-alive timeout of Node's and many other servers, so a reused socket is rarely one the receiver is closing. */
const IDLE_SOCKET_MS = 4_000;
/** Distinct vetted targets kept pooled; the least recently used beyond this is closed (DNS that rotates through many addresses). */
const MAX_POOLED_TARGETS = 64;

type Agent = http.Agent | https.Agent;

/** A listed name's vetted addresses, or why the attempt may not connect. */
type Vetting = { ok: true; addresses: LookupAddress[] } | { ok: false; reason: string };

export function createCallbackSender(options: CallbackSenderOptions): CallbackSender {
  const webhook = new Webhook(options.signingSecret);
  const resolve = options.resolve ?? systemResolve;
  const agents = new Map<string, Agent>();

  async function vet(hostname: string): Promise<Vetting> {
    let addresses: LookupAddress[];
    try {
      addresses = await resolve(hostname);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException | undefined)?.code;
      return { ok: false, reason: `connection failed (${code ?? (error instanceof Error ? error.name : 'lookup')})` };
    }
    const refused = addresses.find((a) => !addressAllowedForName(a.address));
    if (refused) return { ok: false, reason: `refused: ${hostname} resolves to ${refused.address}, which a listed name may not reach` };
    if (addresses.length === 0) return { ok: false, reason: `refused: ${hostname} resolves to no address` };
    return { ok: true, addresses };
  }

  /** The pool for one vetted target: its sockets only ever go to these addresses. */
  function agentFor(protocol: string, key: string): Agent {
    const name = `${protocol}//${key}`;
    let agent = agents.get(name);
    if (agent) {
      agents.delete(name); // most recently used last
    } else {
      agent = protocol === 'https:' ? new https.Agent({ keepAlive: true }) : new http.Agent({ keepAlive: true });
      // After Node's own handler (which applies a server's Keep-Alive hint): never idle longer than IDLE_SOCKET_MS.
      agent.on('free', (socket: Socket) => {
        if (socket.timeout === undefined || socket.timeout === 0 || socket.timeout > IDLE_SOCKET_MS) socket.setTimeout(IDLE_SOCKET_MS);
      });
    }
    agents.set(name, agent);
    for (const [oldest, stale] of agents) {
      if (agents.size <= MAX_POOLED_TARGETS) break;
      stale.destroy();
      agents.delete(oldest);
    }
    return agent;
  }

  return {
    async deliver(event) {
      const target = allowedTarget(event.url, options.allowedHosts);
      if (!target) return { ok: false, httpStatus: null, reason: `host not in ${CALLBACK_HOSTS_SETTING}` };
      let agent: Agent;
      let lookup: LookupFunction | undefined;
      if (target.literal) {
        // A listed IP address is connected to as it is.
        agent = agentFor(target.url.protocol, target.host);
      } else {
        const vetting = await vet(target.host);
        if (!vetting.ok) return { ok: false, httpStatus: null, reason: vetting.reason };
        const { addresses } = vetting;
        agent = agentFor(target.url.protocol, addresses.map((a) => a.address).sort().join(','));
        // The socket connects to exactly what was vetted, whatever the name would resolve to now.
        lookup = (_hostname, lookupOptions, callback) => {
          if (lookupOptions.all) callback(null, addresses);
          else callback(null, addresses[0]?.address ?? '', addresses[0]?.family ?? 4);
        };
      }
      const now = new Date();
      const headers = {
        'content-type': 'application/json',
        'user-agent': 'user-sms-callbacks/1',
        'webhook-id': event.webhookId,
        'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
        'webhook-signature': webhook.sign(event.webhookId, now, event.body),
      };
      try {
        const response = await got.post(target.url, {
          body: event.body,
          headers,
          agent: agent instanceof https.Agent ? { https: agent } : { http: agent },
          ...(lookup ? { dnsLookup: lookup } : {}),
          followRedirect: false,
          throwHttpErrors: false,
          retry: { limit: 0 },
          timeout: { request: options.timeoutMs },
          responseType: 'buffer',
          maxHeaderSize: 16 * 1024,
        });
        const status = response.statusCode;
        if (status >= 200 && status < 300) return { ok: true, httpStatus: status };
        if (status >= 300 && status < 400) return { ok: false, httpStatus: status, reason: `HTTP ${status} (redirects are not followed)` };
        return { ok: false, httpStatus: status, reason: `HTTP ${status}` };
      } catch (error) {
        return { ok: false, httpStatus: null, reason: describeFailure(error, options.timeoutMs) };
      }
    },
    close() {
      for (const agent of agents.values()) agent.destroy();
      agents.clear();
    },
  };
}

function describeFailure(error: unknown, timeoutMs: number): string {
  if (error instanceof TimeoutError) return `no answer within ${timeoutMs} ms (${error.event} phase)`;
  if (error instanceof RequestError) {
    return `connection failed (${error.code})`;
  }
  return error instanceof Error ? `failed (${error.name})` : 'failed';
}
