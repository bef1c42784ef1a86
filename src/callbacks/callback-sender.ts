import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import got, { RequestError, TimeoutError } from 'got';
import { Webhook } from 'standardwebhooks';
import { addressAllowedForName, allowedTarget, CALLBACK_HOSTS_SETTING, type AllowedHost } from './callback-hosts.ts';

// One delivery attempt of a signed event (Standard Webhooks): the host is checked against the allowed
// list, a listed name is resolved and every address it resolves to vetted (callback-hosts.ts), and
// the connection is made to the vetted address itself, by the lookup the socket uses, so nothing can
// resolve differently between the check and the connection. A fresh connection each time (no
// keep-alive): DNS is checked again on every attempt. Redirects are never followed.

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

const REFUSED_CODE = 'ECALLBACKREFUSED';

class RefusedAddressError extends Error {
  override name = 'RefusedAddressError';
  readonly code = REFUSED_CODE;
}

const systemResolve = (hostname: string) =>
  new Promise<LookupAddress[]>((resolve, reject) => {
    dnsLookup(hostname, { all: true, verbatim: true }, (error, addresses) => (error ? reject(error) : resolve(addresses)));
  });

export function createCallbackSender(options: CallbackSenderOptions): CallbackSender {
  const webhook = new Webhook(options.signingSecret);
  const resolve = options.resolve ?? systemResolve;

  // Called by the socket for a listed *name* (an IP literal is connected to as it is).
  const vettedLookup: LookupFunction = (hostname, lookupOptions, callback) => {
    resolve(hostname).then(
      (addresses) => {
        const refused = addresses.find((a) => !addressAllowedForName(a.address));
        if (addresses.length === 0 || refused) {
          const why = refused ? `${hostname} resolves to ${refused.address}, which a listed name may not reach` : `${hostname} resolves to no address`;
          callback(new RefusedAddressError(why), '', 0);
          return;
        }
        if (lookupOptions.all) callback(null, addresses);
        else callback(null, addresses[0]?.address ?? '', addresses[0]?.family ?? 4);
      },
      (error: NodeJS.ErrnoException) => callback(error, '', 0),
    );
  };
  const agents = {
    http: new http.Agent({ keepAlive: false }),
    https: new https.Agent({ keepAlive: false }),
  };

  return {
    async deliver(event) {
      const target = allowedTarget(event.url, options.allowedHosts);
      if (!target) return { ok: false, httpStatus: null, reason: `host not in ${CALLBACK_HOSTS_SETTING}` };
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
          agent: agents,
          ...(target.literal ? {} : { dnsLookup: vettedLookup }),
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
      agents.http.destroy();
      agents.https.destroy();
    },
  };
}

function describeFailure(error: unknown, timeoutMs: number): string {
  if (error instanceof TimeoutError) return `no answer within ${timeoutMs} ms (${error.event} phase)`;
  if (error instanceof RequestError) {
    if (error.code === REFUSED_CODE) return `refused: ${error.message}`;
    return `connection failed (${error.code})`;
  }
  return error instanceof Error ? `failed (${error.name})` : 'failed';
}
