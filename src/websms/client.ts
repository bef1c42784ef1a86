import { Pool } from 'undici';
import { describeWebsmsErrorCode } from './error-codes.ts';

/**
 * The WebSMS.by HTTP client (wire format: websms-api.md). It never retries on its own: whether a
 * send may be repeated depends on whether it can have reached WebSMS, so every failure is classified
 * instead and the caller decides.
 *
 * The API key travels in the query string or form body, so transport errors (which can carry the
 * request) never leave this module: reasons are built from error codes and phases, and every text
 * returned is scrubbed of the key as well.
 */

export interface WebsmsCredentials {
  user: string;
  apiKey: string;
}

export interface SendRequest {
  /** International digits without '+', e.g. '375296254070'. */
  msisdn: string;
  text: string;
  sender: string;
  /** Our own reference (≤ 20 chars), the only way to look a send up when its answer was lost. */
  customId: string;
}

export type SendOutcome =
  | {
      kind: 'accepted';
      messageId: number;
      price: number | null;
      parts: number | null;
      amount: number | null;
      response: Record<string, unknown>;
    }
  /** WebSMS answered status:false; codes 1 and 7 are retryable, the rest final. */
  | { kind: 'rejected'; code: number; description: string; retryable: boolean; response: Record<string, unknown> }
  /** Certainly never reached WebSMS: a resend is safe. */
  | { kind: 'not-sent'; reason: string }
  /** May have been sent and charged: look it up by custom_id before any resend. */
  | { kind: 'unknown'; reason: string };

export type LookupOutcome =
  | { kind: 'found'; statusCode: number; statusName: string; response: Record<string, unknown> }
  | { kind: 'not-found' }
  /** The lookup itself was impossible; it says nothing about the message. `providerCode`: WebSMS's error code, when it gave one (7: too many requests). */
  | { kind: 'failed'; reason: string; providerCode?: number };

export interface Balance {
  sms: number;
  viber: number;
}

/**
 * Thrown only by balance(). Codes: 'websms_<n>' (WebSMS answered status:false with error n),
 * 'timeout', 'unreachable' (no answer over the network: refused, DNS, reset), 'bad_response'
 * (non-2xx or not a WebSMS answer).
 */
export class WebsmsError extends Error {
  readonly code: string;
  readonly retryable: boolean;

  constructor(code: string, message: string, retryable: boolean) {
    super(message);
    this.name = 'WebsmsError';
    this.code = code;
    this.retryable = retryable;
  }
}

export interface WebsmsClientOptions {
  /** e.g. 'https://cabinet.websms.by/api'; a trailing slash is tolerated. */
  baseUrl: string;
  /** How long to wait for WebSMS to answer once the request is out (headers, then again for the body). */
  timeoutMs: number;
  /** GET with a query string is what production has used; POST sends a urlencoded form. */
  method?: 'GET' | 'POST';
}

export interface WebsmsClient {
  /** Never throws for provider or network problems; classifies them. */
  send(credentials: WebsmsCredentials, request: SendRequest): Promise<SendOutcome>;
  lookupByCustomId(credentials: WebsmsCredentials, customId: string): Promise<LookupOutcome>;
  /** status/sms: a message's delivery status by WebSMS's own message id. */
  lookupByMessageId(credentials: WebsmsCredentials, messageId: number): Promise<LookupOutcome>;
  balance(credentials: WebsmsCredentials): Promise<Balance>;
  /** Destroys the keep-alive connections. */
  close(): void;
}

// DNS, TCP and TLS set-up take milliseconds when WebSMS is healthy. Until they finish nothing has
// been sent, so failing fast here costs nothing and the send stays safely retryable.
const CONNECTION_SETUP_TIMEOUT_MS = 3_000;
// Errors raised only while a connection is being opened, before any byte of the request left us:
// refused, DNS failures, and undici's connect timeout (DNS, TCP and TLS set-up together).
// (EHOSTUNREACH and ENETUNREACH are not here: Linux can also report them on an established
// connection whose request was already written, so they fall to "unknown". Neither is the socket
// error undici reports for a kept connection closed under a request: undici checks an idle
// connection before reusing it and moves a request that was not written yet to a new connection on
// its own, so a socket error that reaches us came with a request that may have been written.)
const NEVER_CONNECTED_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN']);
// undici's timeout codes, named by the phase they bound. Only the connect phase comes before the
// request is written; once it is out, WebSMS may be processing it.
const TIMEOUT_PHASES = new Map([
  ['UND_ERR_CONNECT_TIMEOUT', 'connect'],
  ['UND_ERR_HEADERS_TIMEOUT', 'response'],
  ['UND_ERR_BODY_TIMEOUT', 'read'],
]);
const IDLE_CONNECTION_TIMEOUT_MS = 4_000;
// A server's own keep-alive announcement (`Keep-Alive: timeout=5`) shortens the idle time to this much
// under it; a connection the server would keep for no longer than this is not reused.
const SERVER_KEEP_ALIVE_MARGIN_MS = 1_000;
// Sent with every call: a request without one is turned away by some proxies and firewalls.
const USER_AGENT = 'user-sms-dispatcher/1';

interface TransportFailure {
  /** True when the request certainly never reached WebSMS. */
  notSent: boolean;
  timeout: boolean;
  reason: string;
}

function errorCode(error: unknown): string {
  const code = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  return typeof code === 'string' && code !== '' ? code : 'unexpected error';
}

function describeTransportFailure(error: unknown): TransportFailure {
  const code = errorCode(error);
  const phase = TIMEOUT_PHASES.get(code);
  if (phase !== undefined) return { notSent: phase === 'connect', timeout: true, reason: `timed out waiting for WebSMS (${phase} phase)` };
  if (NEVER_CONNECTED_CODES.has(code)) return { notSent: true, timeout: false, reason: `could not connect to WebSMS (${code})` };
  // ECONNRESET, EPIPE, a socket closed under the request, a body cut short: it may have been processed.
  return { notSent: false, timeout: false, reason: `connection to WebSMS failed (${code})` };
}

/** Removes the key, raw and in both URL encodings, from text that leaves the client. */
function scrub(text: string, apiKey: string): string {
  if (apiKey === '') return text;
  const forms = new Set([apiKey, encodeURIComponent(apiKey), new URLSearchParams({ k: apiKey }).toString().slice(2)]);
  let scrubbed = text;
  for (const form of forms) scrubbed = scrubbed.replaceAll(form, '[redacted]');
  return scrubbed;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A WebSMS answer is a JSON object with a boolean `status`; anything else is not one. Every string in
 * it is scrubbed, so a provider text that echoes the key cannot leak through `response` or a
 * description.
 */
function parseAnswer(body: string, apiKey: string): Record<string, unknown> | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body, (_name, value: unknown) => (typeof value === 'string' ? scrub(value, apiKey) : value));
  } catch {
    return null;
  }
  return isRecord(parsed) && typeof parsed.status === 'boolean' ? parsed : null;
}

// Numbers sometimes arrive as numeric strings.
function toNumber(value: unknown): number | null {
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (typeof value === 'string' && value.trim() !== '') {
    const number = Number(value);
    return Number.isFinite(number) ? number : null;
  }
  return null;
}

/**
 * The code and description of a status:false answer. The error is usually an object, but a plain
 * string is tolerated; without a numeric code the code is 0, which the table treats as final.
 */
function readProviderError(answer: Record<string, unknown>): { code: number; description: string } {
  const { error } = answer;
  if (typeof error === 'string' && error.trim() !== '') return { code: 0, description: error };
  const code = isRecord(error) ? (toNumber(error.code) ?? 0) : 0;
  const description = isRecord(error) && typeof error.description === 'string' && error.description.trim() !== '' ? error.description : describeWebsmsErrorCode(code).meaning;
  return { code, description };
}

// A status:false lookup counts as "not found" only when it says exactly that; anything vaguer
// ("User not found", an auth error) must not license a resend.
const NOT_FOUND_DESCRIPTION = /^(message |sms )?not found\.?$/i;

/** A complete HTTP answer: its status and its whole body as text. */
interface HttpAnswer {
  statusCode: number;
  body: string;
}

function isSuccess(statusCode: number): boolean {
  return statusCode >= 200 && statusCode < 300;
}

function classifySendAnswer(response: HttpAnswer, apiKey: string): SendOutcome {
  const { statusCode } = response;
  // A 429 means the request was turned away at the door.
  if (statusCode === 429) return { kind: 'not-sent', reason: 'HTTP 429: WebSMS refused the request (too many requests)' };
  // A 5xx can come after the message was accepted (a crash while answering).
  if (statusCode >= 500) return { kind: 'unknown', reason: `HTTP ${statusCode} from WebSMS` };
  const answer = parseAnswer(response.body, apiKey);
  // WebSMS reports its own errors as HTTP 200 JSON, so a 3xx/4xx without a WebSMS answer comes from
  // something in front of it (proxy, WAF, wrong URL) and the spec does not say whether the message
  // went through. We choose "unknown": it costs one lookup, and a persistent cause (a wrong URL)
  // makes the lookup fail too, leaving the message for a human instead of risking a double charge.
  if (answer === null) {
    return {
      kind: 'unknown',
      reason: isSuccess(statusCode) ? 'WebSMS answered with something other than a JSON object with a boolean status' : `HTTP ${statusCode} from WebSMS without a WebSMS answer`,
    };
  }
  // status:false is WebSMS's own refusal, whatever the HTTP status below 500.
  if (answer.status === false) {
    const { code, description } = readProviderError(answer);
    return { kind: 'rejected', code, description, retryable: describeWebsmsErrorCode(code).retryable, response: answer };
  }
  if (!isSuccess(statusCode)) return { kind: 'unknown', reason: `HTTP ${statusCode} from WebSMS with status:true` };
  const messageId = toNumber(answer.message_id);
  if (messageId === null) return { kind: 'unknown', reason: 'WebSMS answered status:true without a numeric message_id' };
  return {
    kind: 'accepted',
    messageId,
    price: toNumber(answer.price),
    parts: toNumber(answer.parts),
    amount: toNumber(answer.amount),
    response: answer,
  };
}

function classifyLookupAnswer(response: HttpAnswer, apiKey: string): LookupOutcome {
  if (!isSuccess(response.statusCode)) return { kind: 'failed', reason: `HTTP ${response.statusCode} from WebSMS` };
  const answer = parseAnswer(response.body, apiKey);
  if (answer === null) return { kind: 'failed', reason: 'WebSMS answered with something other than a JSON object with a boolean status' };
  if (answer.status === false) {
    const { code, description } = readProviderError(answer);
    if (NOT_FOUND_DESCRIPTION.test(description.trim())) return { kind: 'not-found' };
    return { kind: 'failed', reason: `WebSMS error ${code}: ${description}`, ...(typeof code === 'number' ? { providerCode: code } : {}) };
  }
  const status = answer.message_status;
  if (!isRecord(status)) return { kind: 'failed', reason: 'WebSMS answered status:true without message_status' };
  // An unknown message is reported as `"code": false, "name": "Not found"`.
  if (status.code === false) return { kind: 'not-found' };
  const statusCode = toNumber(status.code);
  if (statusCode === null) return { kind: 'failed', reason: 'WebSMS answered a message_status without a numeric code' };
  const statusName = typeof status.name === 'string' ? status.name : '';
  return { kind: 'found', statusCode, statusName, response: answer };
}

function readBalance(response: HttpAnswer, apiKey: string): Balance {
  const { statusCode } = response;
  if (!isSuccess(statusCode)) throw new WebsmsError('bad_response', `HTTP ${statusCode} from WebSMS`, statusCode >= 500 || statusCode === 429);
  const answer = parseAnswer(response.body, apiKey);
  if (answer === null) throw new WebsmsError('bad_response', 'WebSMS answered with something other than a JSON object with a boolean status', true);
  if (answer.status === false) {
    const { code, description } = readProviderError(answer);
    throw new WebsmsError(`websms_${code}`, `WebSMS error ${code}: ${description}`, describeWebsmsErrorCode(code).retryable);
  }
  const sms = toNumber(answer.sms);
  if (sms === null) throw new WebsmsError('bad_response', 'WebSMS balance answer without a numeric sms balance', true);
  // The viber balance is secondary; an account without Viber may leave it out.
  return { sms, viber: toNumber(answer.viber) ?? 0 };
}

export function createWebsmsClient(options: WebsmsClientOptions): WebsmsClient {
  const baseUrl = options.baseUrl.replace(/\/+$/, '');
  // A malformed base URL is a configuration bug: fail at start-up, not as a "network" outcome. Calls
  // go to the URL's origin and path; user info, a query or a fragment would be dropped silently.
  const { origin, pathname, username, password, search, hash } = new URL(baseUrl);
  if (username !== '' || password !== '' || search !== '' || hash !== '') {
    throw new Error('The WebSMS base URL must not carry user info, a query or a fragment');
  }
  const basePath = pathname.replace(/\/+$/, '');
  const method = options.method ?? 'GET';
  const headers: Record<string, string> =
    method === 'GET' ? { 'user-agent': USER_AGENT } : { 'user-agent': USER_AGENT, 'content-type': 'application/x-www-form-urlencoded' };
  // Keep-alive saves a TCP and TLS handshake per call. Writing on a kept connection that the server
  // has just closed can fail after the request left, which must be classified "unknown" (a lookup
  // before any resend), so idle connections are dropped before common server keep-alive limits (5 s
  // in Apache and Node) run out, and sooner when the server announces a shorter one. undici's
  // redirects are off by default: a redirect would carry the key to another URL and repeat the call,
  // so the 3xx is classified instead. Nothing is retried here. undici times headers and bodies with a
  // coarse clock (about 1 s resolution): a timeout fires up to a second after timeoutMs.
  const createPool = () =>
    new Pool(origin, {
      connectTimeout: CONNECTION_SETUP_TIMEOUT_MS,
      headersTimeout: options.timeoutMs,
      bodyTimeout: options.timeoutMs,
      keepAliveTimeout: IDLE_CONNECTION_TIMEOUT_MS,
      keepAliveMaxTimeout: IDLE_CONNECTION_TIMEOUT_MS,
      keepAliveTimeoutThreshold: SERVER_KEEP_ALIVE_MARGIN_MS,
    });
  let pool = createPool();

  async function call(path: string, params: Record<string, string>): Promise<HttpAnswer> {
    const encoded = new URLSearchParams(params).toString();
    const response =
      method === 'GET'
        ? await pool.request({ path: `${basePath}/${path}?${encoded}`, method, headers })
        : await pool.request({ path: `${basePath}/${path}`, method, headers, body: encoded });
    return { statusCode: response.statusCode, body: await response.body.text() };
  }

  /** statusCustom/sms or status/sms: a failure to ask is an outcome too, never an exception. */
  async function lookup(path: string, credentials: WebsmsCredentials, params: Record<string, string>): Promise<LookupOutcome> {
    let response: HttpAnswer;
    try {
      response = await call(path, { user: credentials.user, apikey: credentials.apiKey, ...params });
    } catch (error) {
      return { kind: 'failed', reason: scrub(describeTransportFailure(error).reason, credentials.apiKey) };
    }
    return classifyLookupAnswer(response, credentials.apiKey);
  }

  return {
    async send(credentials, sms) {
      let response: HttpAnswer;
      try {
        response = await call('send/sms', {
          user: credentials.user,
          apikey: credentials.apiKey,
          msisdn: sms.msisdn,
          text: sms.text,
          sender: sms.sender,
          custom_id: sms.customId,
        });
      } catch (error) {
        const failure = describeTransportFailure(error);
        return { kind: failure.notSent ? 'not-sent' : 'unknown', reason: scrub(failure.reason, credentials.apiKey) };
      }
      return classifySendAnswer(response, credentials.apiKey);
    },

    lookupByCustomId(credentials, customId) {
      return lookup('statusCustom/sms', credentials, { custom_id: customId });
    },
    lookupByMessageId(credentials, messageId) {
      return lookup('status/sms', credentials, { message_id: String(messageId) });
    },

    async balance(credentials) {
      let response: HttpAnswer;
      try {
        response = await call('balances', { user: credentials.user, apikey: credentials.apiKey });
      } catch (error) {
        const failure = describeTransportFailure(error);
        // Reading a balance changes nothing, so any transport failure may be retried.
        throw new WebsmsError(failure.timeout ? 'timeout' : 'unreachable', scrub(failure.reason, credentials.apiKey), true);
      }
      return readBalance(response, credentials.apiKey);
    },

    close() {
      // Like destroying an agent: open connections go, and a later call opens a new one.
      const closing = pool;
      pool = createPool();
      closing.destroy().catch(() => undefined);
    },
  };
}
