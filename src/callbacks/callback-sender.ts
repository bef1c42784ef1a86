import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { Webhook } from 'standardwebhooks';
import { Agent, type Dispatcher } from 'undici';
import { addressAllowedForName, allowedTarget, CALLBACK_HOSTS_SETTING, type AllowedHost } from './callback-hosts.ts';

// One delivery attempt of a signed event (Standard Webhooks): the host is checked against the allowed
// list, a listed name is resolved and every address it resolves to vetted (callback-hosts.ts) on every
// attempt, and the connection is made to the vetted addresses themselves, by the lookup the socket
// uses, so nothing can resolve differently between the check and the connection. Redirects are never
// followed. One timeout bounds the whole attempt, resolving included; the answer's body is read and
// discarded.
//
// Connections are kept alive between attempts (a callback per message change, two or more per
// message: a new TCP connection each time cost more CPU than the rest of the attempt). The pool is
// keyed by what was vetted: one agent per protocol and set of addresses a name resolved to (or per
// listed IP address), whose sockets connect only to those addresses, so an attempt reuses a pooled
// socket only when it goes to an address vetted for this very attempt. A name that now resolves
// elsewhere gets a new connection, and one that resolves to a refused address is refused before any
// pooled socket is looked at.

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
/** A receiver's own Keep-Alive timeout hint, less this, when shorter than IDLE_SOCKET_MS (as Node's agent does). */
const KEEP_ALIVE_HINT_MARGIN_MS = 1_000;
/** Distinct vetted targets kept pooled; the least recently used beyond this is closed (DNS that rotates through many addresses). */
const MAX_POOLED_TARGETS = 64;
const MAX_HEADER_BYTES = 16 * 1024;

/** A listed name's vetted addresses, or why the attempt may not connect. */
type Vetting = { ok: true; addresses: LookupAddress[] } | { ok: false; reason: string };

type Phase = 'lookup' | 'connect' | 'response' | 'read';

export function createCallbackSender(options: CallbackSenderOptions): CallbackSender {
  const webhook = new Webhook(options.signingSecret);
  const resolve = options.resolve ?? systemResolve;
  const { timeoutMs } = options;
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

  /** The pool for one vetted target: its sockets only ever connect to these addresses, whatever name they are for. */
  function agentFor(protocol: string, addresses: readonly LookupAddress[]): Agent {
    const name = `${protocol}//${addresses.map((a) => a.address).sort().join(',')}`;
    let agent = agents.get(name);
    if (agent) {
      agents.delete(name); // most recently used last
    } else {
      const vetted = addresses.map((a) => ({ address: a.address, family: a.family }));
      const first = vetted[0] ?? { address: '', family: 4 };
      const lookup: LookupFunction = (_hostname, lookupOptions, callback) => {
        if (lookupOptions.all) callback(null, vetted);
        else callback(null, first.address, first.family);
      };
      agent = new Agent({
        connect: { lookup, timeout: timeoutMs },
        keepAliveTimeout: IDLE_SOCKET_MS,
        keepAliveMaxTimeout: IDLE_SOCKET_MS,
        keepAliveTimeoutThreshold: KEEP_ALIVE_HINT_MARGIN_MS,
        maxHeaderSize: MAX_HEADER_BYTES,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    }
    agents.set(name, agent);
    for (const [oldest, stale] of agents) {
      if (agents.size <= MAX_POOLED_TARGETS) break;
      agents.delete(oldest);
      // Attempts under way on it finish; its idle sockets close now.
      stale.close().catch(() => undefined);
    }
    return agent;
  }

  return {
    async deliver(event) {
      const target = allowedTarget(event.url, options.allowedHosts);
      if (!target) return { ok: false, httpStatus: null, reason: `host not in ${CALLBACK_HOSTS_SETTING}` };
      const attempt = new Attempt(timeoutMs);
      let addresses: LookupAddress[];
      if (target.literal) {
        // A listed IP address is connected to as it is.
        const address = target.host.startsWith('[') ? target.host.slice(1, -1) : target.host;
        addresses = [{ address, family: isIP(address) }];
      } else {
        attempt.phase = 'lookup';
        const vetting = await attempt.unlessTimedOut(vet(target.host));
        if (!vetting) return attempt.result;
        if (!vetting.ok) return attempt.finish({ ok: false, httpStatus: null, reason: vetting.reason });
        addresses = vetting.addresses;
      }
      const now = new Date();
      const headers = {
        'content-type': 'application/json',
        'user-agent': 'user-sms-callbacks/1',
        'webhook-id': event.webhookId,
        'webhook-timestamp': String(Math.floor(now.getTime() / 1000)),
        'webhook-signature': webhook.sign(event.webhookId, now, event.body),
      };
      attempt.phase = 'connect';
      // No redirect handling is composed in: a 3xx is the answer.
      agentFor(target.url.protocol, addresses).dispatch(
        { origin: target.url.origin, path: `${target.url.pathname}${target.url.search}`, method: 'POST', headers, body: event.body },
        attempt,
      );
      return attempt.result;
    },
    close() {
      for (const agent of agents.values()) agent.destroy().catch(() => undefined);
      agents.clear();
    },
  };
}

/** Stands for the attempt's timeout where the request is aborted (the attempt has its answer already). */
class AttemptTimedOut extends Error {
  override name = 'AttemptTimedOut';
}

/**
 * One attempt's course, as undici's handler of the request: the phase it is in, the one timer that
 * bounds it, and its outcome, settled once. The answer's body is read and dropped as it comes, so the
 * socket goes back to the pool.
 */
class Attempt implements Dispatcher.DispatchHandler {
  phase: Phase = 'connect';
  readonly result: Promise<AttemptResult>;
  readonly #timeoutMs: number;
  readonly #timer: NodeJS.Timeout;
  #settle: (result: AttemptResult) => void = () => undefined;
  #settled = false;
  #controller: Dispatcher.DispatchController | undefined;
  #status = 0;

  constructor(timeoutMs: number) {
    this.#timeoutMs = timeoutMs;
    this.result = new Promise((settle) => (this.#settle = settle));
    this.#timer = setTimeout(() => this.#timeOut(), timeoutMs);
  }

  /** What `step` gives, or undefined when the attempt timed out first. */
  unlessTimedOut<T>(step: Promise<T>): Promise<T | undefined> {
    return Promise.race([step, this.result.then(() => undefined)]);
  }

  finish(result: AttemptResult): Promise<AttemptResult> {
    if (!this.#settled) {
      this.#settled = true;
      clearTimeout(this.#timer);
      this.#settle(result);
    }
    return this.result;
  }

  #timeOut(): void {
    void this.finish({ ok: false, httpStatus: null, reason: `no answer within ${this.#timeoutMs} ms (${this.phase} phase)` });
    this.#controller?.abort(new AttemptTimedOut());
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    // A request that was still waiting for its connection when the attempt timed out is not sent.
    if (this.#settled) {
      controller.abort(new AttemptTimedOut());
      return;
    }
    this.#controller = controller;
    this.phase = 'response';
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number): void {
    if (statusCode < 200) return; // informational; the answer follows
    this.#status = statusCode;
    this.phase = 'read';
  }

  onResponseData(): void {
    // read and discarded
  }

  onResponseEnd(): void {
    clearTimeout(this.#timer); // answered in time
    const status = this.#status;
    const result: AttemptResult =
      status >= 200 && status < 300
        ? { ok: true, httpStatus: status }
        : { ok: false, httpStatus: status, reason: status >= 300 && status < 400 ? `HTTP ${status} (redirects are not followed)` : `HTTP ${status}` };
    // undici hands a kept-alive socket back to its pool one event-loop turn after the answer ends (an
    // immediate queued after this call returns). The outcome is reported after that, so that the next
    // attempt to this target, often made at once, finds the socket free instead of opening another.
    queueMicrotask(() => setImmediate(() => void this.finish(result)));
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    void this.finish({ ok: false, httpStatus: null, reason: describeFailure(error, this.#timeoutMs) });
  }
}

/** undici's own timeouts (set to the attempt's, so the attempt's timer normally comes first) by the phase they bound. */
const TIMEOUT_PHASES: Readonly<Record<string, Phase>> = {
  UND_ERR_CONNECT_TIMEOUT: 'connect',
  UND_ERR_HEADERS_TIMEOUT: 'response',
  UND_ERR_BODY_TIMEOUT: 'read',
};

/** A code or the error's class name, never its message (which may quote the URL). */
function describeFailure(error: unknown, timeoutMs: number): string {
  const code = (error as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string') {
    const phase = TIMEOUT_PHASES[code];
    return phase ? `no answer within ${timeoutMs} ms (${phase} phase)` : `connection failed (${code})`;
  }
  return error instanceof Error ? `failed (${error.name})` : 'failed';
}
