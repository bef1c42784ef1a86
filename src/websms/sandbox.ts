import http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * A stand-in for WebSMS.by that speaks its wire format (websms-api.md) over real HTTP, for tests,
 * `npm run dev` and the benchmark. It keeps everything in memory and does no per-request logging,
 * so it can take well over 1000 requests a second.
 *
 * Recipients that trigger failures (msisdn digits, with or without a leading '+'):
 *
 * | name                 | msisdn       | behaviour                                                        |
 * |----------------------|--------------|------------------------------------------------------------------|
 * | invalidCredentials   | 375330000004 | error 4 (invalid user or apikey)                                 |
 * | invalidNumber        | 375330000100 | error 100 (invalid number)                                       |
 * | rateLimited          | 375330000007 | error 7 on every call                                            |
 * | rateLimitedOnce      | 375330000017 | error 7 on the first call for a custom_id, then normal success   |
 * | internalErrorOnce    | 375330000001 | error 1 on the first call for a custom_id, then normal success   |
 * | http500              | 375330000500 | HTTP 500 with an HTML body; the message is NOT accepted          |
 * | acceptedThenHttp500  | 375330000501 | the message IS accepted (visible to statusCustom), then HTTP 500 |
 * | garbage              | 375330000502 | HTTP 200 with a non-JSON body; the message is NOT accepted       |
 * | hangOnce             | 375330000408 | first call for a custom_id: never answers, nothing accepted      |
 * | acceptedThenHangOnce | 375330000409 | first call for a custom_id: accepted, then never answers         |
 *
 * Delivery (status/sms, statusCustom/sms): an accepted message plays WebSMS's statuses over
 * `deliveryMs` — 0 queued for the first third, 1 accepted by operator until `deliveryMs`, then final:
 * 3 delivered, or, for these recipients, 2 rejected (375330000302), 4 not delivered (375330000304);
 * 375330000305 never becomes final (5 being delivered). `deliveryMs` 0: final at once.
 *
 * "First call for a custom_id" is per account; a send without custom_id counts as one more id.
 * Faults queued with addFault() (or POST /__sandbox/faults) take precedence over these triggers.
 * Every other valid number is accepted. A hanging request holds its connection open until the client
 * gives up or the sandbox closes.
 */
export const sandboxTriggers = {
  invalidCredentials: '375330000004',
  invalidNumber: '375330000100',
  rateLimited: '375330000007',
  rateLimitedOnce: '375330000017',
  internalErrorOnce: '375330000001',
  http500: '375330000500',
  acceptedThenHttp500: '375330000501',
  garbage: '375330000502',
  hangOnce: '375330000408',
  acceptedThenHangOnce: '375330000409',
  deliveryRejected: '375330000302',
  deliveryFailed: '375330000304',
  deliveryNeverFinal: '375330000305',
} as const;

/**
 * Faults a test queues for the next matching calls, whatever the recipient (fault tests use them for
 * storms and outages under load; the triggers above fire once or always, these exactly `count` times).
 * Kinds that start with `accepted` accept (and charge) the message before the bad answer.
 */
export const SANDBOX_FAULT_KINDS = [
  'error1',
  'error7',
  'http500',
  'garbage',
  'hang',
  'acceptedThenHttp500',
  'acceptedThenGarbage',
  'acceptedThenHang',
] as const;
export type SandboxFaultKind = (typeof SANDBOX_FAULT_KINDS)[number];

export interface SandboxFault {
  kind: SandboxFaultKind;
  /** How many matching calls get it. */
  count: number;
  /** 'send/sms' (default), or 'statusCustom/sms' / 'status/sms' for failing look-ups (the not-accepted kinds only). */
  endpoint?: 'send/sms' | 'statusCustom/sms' | 'status/sms';
  /** Only calls by this account (one enterprise). */
  user?: string;
  /** Only sends to this recipient (digits, with or without '+'). */
  msisdn?: string;
  /** Only calls with this custom_id. */
  customId?: string;
  /**
   * Accepted kinds only: statusCustom/sms does not find the message, as if WebSMS's lookup lagged or
   * were wrong. The service then resends it: a real duplicate, which it must record
   * (`resent_after_unknown`), never hide. The call is marked `hidden`.
   */
  hideFromLookup?: boolean;
}

export interface SandboxAccount {
  user: string;
  apiKey: string;
  sms?: number;
  viber?: number;
}

export interface SandboxOptions {
  /** 0 picks a free port. */
  port?: number;
  host?: string;
  /** Delay before every API call is processed and answered (not the /__sandbox control calls). */
  latencyMs?: number;
  accounts?: SandboxAccount[];
  /** How long an accepted message takes to reach its final delivery status; 0 (default): at once. */
  deliveryMs?: number;
}

/**
 * One API call as the sandbox saw it. `messageId` is set on a send exactly when the sandbox accepted
 * the message, whatever answer the client then got (a 501 or 409 send is accepted but answered with
 * a 500 or not at all): that is what `acceptedSends()` counts. On a status lookup it is the id of the
 * message found. The apikey is never stored.
 */
export interface SandboxCall {
  /** Date.now() when the request arrived. */
  at: number;
  /** 'send/sms', 'balances', 'status/sms' or 'statusCustom/sms'. */
  endpoint: string;
  user: string | null;
  msisdn: string | null;
  text: string | null;
  sender: string | null;
  customId: string | null;
  result: 'accepted' | 'rejected' | 'http-500' | 'garbage' | 'hang' | 'status' | 'balance';
  errorCode?: number;
  messageId?: number;
  /** A queued fault (addFault) decided this call's answer. */
  fault?: SandboxFaultKind;
  /** Accepted, but hidden from statusCustom/sms lookups (SandboxFault.hideFromLookup). */
  hidden?: boolean;
}

export interface SandboxServer {
  /** The base URL a client uses, e.g. 'http://127.0.0.1:8099/api'. */
  url: string;
  port: number;
  calls(): SandboxCall[];
  /** Sends the sandbox accepted (and would have charged for), in arrival order. */
  acceptedSends(): SandboxCall[];
  /** Forgets calls, messages, first-call memory and queued faults; keeps accounts, latency and the id counter. */
  reset(): void;
  setLatency(ms: number): void;
  /** Adds an account or replaces the one with the same user. */
  addAccount(account: SandboxAccount): void;
  /** Queues a fault for the next `count` matching calls (also POST /__sandbox/faults, JSON body). */
  addFault(fault: SandboxFault): void;
  /** Matching calls still to be faulted, over all queued faults. */
  faultsLeft(): number;
  /** API calls received but not yet processed, held back by the latency (calls() lists them once processed). */
  inFlight(): number;
  /** Stops listening and destroys every connection, hanging ones included. */
  close(): Promise<void>;
}

const API_ENDPOINTS = ['send/sms', 'balances', 'status/sms', 'statusCustom/sms'] as const;
type ApiEndpoint = (typeof API_ENDPOINTS)[number];

function isApiEndpoint(path: string): path is ApiEndpoint {
  return (API_ENDPOINTS as readonly string[]).includes(path);
}
// Ids in the range seen from websms.by; the counter is never reset, so an id is never reused within
// a sandbox's life and stored provider ids stay unique across test resets.
const FIRST_MESSAGE_ID = 76440000;
const PRICE_PER_PART = 0.014732;
// Balances for accounts added without one; viber defaults to 0 as on the real account.
const DEFAULT_SMS_BALANCE = 100;

// GSM 03.38: basic characters cost one septet, extension characters two (escape + character).
const GSM7_BASIC = new Set(
  '@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !"#¤%&\'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà',
);
const GSM7_EXTENSION = new Set('^{}\\[~]|€\f');

/** SMS parts for a text: GSM-7 160 single / 153 per part; any other character → UCS-2 70 / 67. */
function countParts(text: string): number {
  let septets = 0;
  for (const char of text) {
    if (GSM7_BASIC.has(char)) septets += 1;
    else if (GSM7_EXTENSION.has(char)) septets += 2;
    else {
      // UCS-2 counts 16-bit units, so a character outside the BMP (an emoji) takes two.
      return text.length <= 70 ? 1 : Math.ceil(text.length / 67);
    }
  }
  return septets <= 160 ? 1 : Math.ceil(septets / 153);
}

interface StoredMessage {
  messageId: number;
  user: string;
  /** Date.now() when it was accepted */
  acceptedAt: number;
  /** the recipient's digits: some end in another delivery status */
  digits: string | null;
}

/** WebSMS's status of a message `elapsedMs` after it was accepted (see the table above). */
export function deliveryStatusAfter(digits: string | null, elapsedMs: number, deliveryMs: number): { code: number; name: string } {
  if (elapsedMs < deliveryMs / 3) return { code: 0, name: 'Queued' };
  if (digits === sandboxTriggers.deliveryNeverFinal) return elapsedMs < deliveryMs ? { code: 1, name: 'Accepted by operator' } : { code: 5, name: 'Being delivered' };
  if (elapsedMs < deliveryMs) return { code: 1, name: 'Accepted by operator' };
  if (digits === sandboxTriggers.deliveryRejected) return { code: 2, name: 'Rejected' };
  if (digits === sandboxTriggers.deliveryFailed) return { code: 4, name: 'Not delivered' };
  return { code: 3, name: 'Delivered' };
}

interface Answer {
  status: number;
  contentType: string;
  body: string;
}

// How a call ends: an answer, or no answer at all (the socket stays open until the client gives up
// or the sandbox closes).
type Reply = Answer | 'hang';

function json(value: unknown): Answer {
  return { status: 200, contentType: 'application/json', body: JSON.stringify(value) };
}

function providerError(code: number, description: string): Answer {
  return json({ status: false, error: { code, description } });
}

const HTTP_500: Answer = {
  status: 500,
  contentType: 'text/html',
  body: '<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1></body></html>',
};
// A truncated JSON object, sent as JSON: the client must not trust the content type.
const GARBAGE: Answer = { status: 200, contentType: 'application/json', body: '{"status":tr' };

function readBody(request: http.IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    request.on('error', reject);
  });
}

function write(response: http.ServerResponse, answer: Answer): void {
  response.writeHead(answer.status, {
    'content-type': `${answer.contentType}; charset=utf-8`,
    'content-length': Buffer.byteLength(answer.body),
  });
  response.end(answer.body);
}

export async function startSandbox(options: SandboxOptions = {}): Promise<SandboxServer> {
  const accounts = new Map<string, SandboxAccount>();
  for (const account of options.accounts ?? []) accounts.set(account.user, account);
  let latencyMs = options.latencyMs ?? 0;
  const deliveryMs = options.deliveryMs ?? 0;
  let calls: SandboxCall[] = [];
  let nextMessageId = FIRST_MESSAGE_ID;
  // Keyed by `${user}\n${customId}`; the latest send with that custom_id wins, as a lookup would.
  let messagesByCustomId = new Map<string, StoredMessage>();
  let messagesById = new Map<number, StoredMessage>();
  // `${trigger msisdn}\n${user}\n${customId}` for once-only triggers that already fired.
  let firedOnce = new Set<string>();
  let faults: SandboxFault[] = [];
  const delayedReplies = new Set<NodeJS.Timeout>();

  /** The first queued fault matching this call, counted down; undefined when none applies. */
  function takeFault(endpoint: SandboxFault['endpoint'], call: SandboxCall): SandboxFault | undefined {
    const digits = call.msisdn?.replace(/^\+/, '') ?? null;
    const fault = faults.find(
      (f) =>
        (f.endpoint ?? 'send/sms') === endpoint &&
        (f.user === undefined || f.user === call.user) &&
        (f.msisdn === undefined || f.msisdn.replace(/^\+/, '') === digits) &&
        (f.customId === undefined || f.customId === call.customId),
    );
    if (fault === undefined) return undefined;
    fault.count -= 1;
    if (fault.count <= 0) faults = faults.filter((f) => f !== fault);
    call.fault = fault.kind;
    return fault;
  }

  /** The answer of a fault that accepts nothing (also used for failing lookups). */
  function notAcceptedFault(call: SandboxCall, kind: SandboxFaultKind): Reply {
    switch (kind) {
      case 'error1':
      case 'error7':
        call.result = 'rejected';
        call.errorCode = kind === 'error1' ? 1 : 7;
        return kind === 'error1' ? providerError(1, 'Internal error') : providerError(7, 'Too many requests');
      case 'garbage':
      case 'acceptedThenGarbage':
        call.result = 'garbage';
        return GARBAGE;
      case 'hang':
      case 'acceptedThenHang':
        call.result = 'hang';
        return 'hang';
      default:
        call.result = 'http-500';
        return HTTP_500;
    }
  }

  function firstTime(msisdn: string | null, user: string, customId: string | null): boolean {
    const key = `${msisdn}\n${user}\n${customId ?? ''}`;
    if (firedOnce.has(key)) return false;
    firedOnce.add(key);
    return true;
  }

  function send(call: SandboxCall, user: string): Reply {
    const { msisdn, text, sender, customId } = call;
    const digits = msisdn?.startsWith('+') ? msisdn.slice(1) : msisdn;
    const reject = (code: number, description: string): Answer => {
      call.result = 'rejected';
      call.errorCode = code;
      return providerError(code, description);
    };

    const fault = takeFault('send/sms', call);
    if (fault && !fault.kind.startsWith('accepted')) return notAcceptedFault(call, fault.kind);
    // A queued fault replaces the recipient's own trigger.
    switch (fault ? null : digits) {
      case sandboxTriggers.invalidCredentials:
        return reject(4, 'Invalid user or apikey');
      case sandboxTriggers.invalidNumber:
        return reject(100, 'Invalid phone number');
      case sandboxTriggers.rateLimited:
        return reject(7, 'Too many requests');
      case sandboxTriggers.rateLimitedOnce:
        if (firstTime(digits, user, customId)) return reject(7, 'Too many requests');
        break;
      case sandboxTriggers.internalErrorOnce:
        if (firstTime(digits, user, customId)) return reject(1, 'Internal error');
        break;
      case sandboxTriggers.http500:
        call.result = 'http-500';
        return HTTP_500;
      case sandboxTriggers.garbage:
        call.result = 'garbage';
        return GARBAGE;
      case sandboxTriggers.hangOnce:
        if (firstTime(digits, user, customId)) {
          call.result = 'hang';
          return 'hang';
        }
        break;
    }

    if (digits === null || !/^\d{10,15}$/.test(digits)) return reject(100, 'Invalid phone number');
    if (!text) return reject(105, 'Empty text');
    if (sender !== null && sender.length > 11) return reject(2, 'Sender is too long');
    // websms-api.md: custom_id ≤ 20 chars; catching a longer one here catches a client bug early.
    if (customId !== null && customId.length > 20) return reject(2, 'custom_id is too long');

    const messageId = nextMessageId++;
    const message: StoredMessage = { messageId, user, acceptedAt: Date.now(), digits };
    messagesById.set(messageId, message);
    if (customId !== null && !fault?.hideFromLookup) messagesByCustomId.set(`${user}\n${customId}`, message);
    call.result = 'accepted';
    call.messageId = messageId;
    if (fault) {
      if (fault.hideFromLookup) call.hidden = true;
      return notAcceptedFault(call, fault.kind);
    }

    if (digits === sandboxTriggers.acceptedThenHttp500) {
      call.result = 'http-500';
      return HTTP_500;
    }
    if (digits === sandboxTriggers.acceptedThenHangOnce && firstTime(digits, user, customId)) {
      call.result = 'hang';
      return 'hang';
    }
    const parts = countParts(text);
    return json({
      status: true,
      message_id: messageId,
      price: PRICE_PER_PART,
      parts,
      amount: Math.round(PRICE_PER_PART * parts * 1e6) / 1e6,
      ...(customId === null ? {} : { custom_id: customId }),
    });
  }

  function status(call: SandboxCall, message: StoredMessage | undefined, user: string): Answer {
    call.result = 'status';
    if (message === undefined || message.user !== user) {
      return json({ status: true, message_status: { code: false, name: 'Not found' } });
    }
    call.messageId = message.messageId;
    return json({ status: true, message_status: deliveryStatusAfter(message.digits, Date.now() - message.acceptedAt, deliveryMs) });
  }

  function answerApiCall(endpoint: ApiEndpoint, params: URLSearchParams, at: number): Reply {
    const user = params.get('user');
    const apiKey = params.get('apikey');
    const call: SandboxCall = {
      at,
      endpoint,
      user,
      msisdn: params.get('msisdn'),
      text: params.get('text'),
      sender: params.get('sender'),
      customId: params.get('custom_id'),
      result: 'rejected',
    };
    calls.push(call);

    if (!user || !apiKey) {
      call.errorCode = 3;
      return providerError(3, 'Missing user or apikey');
    }
    const account = accounts.get(user);
    if (account === undefined || account.apiKey !== apiKey) {
      call.errorCode = 4;
      return providerError(4, 'Invalid user or apikey');
    }

    switch (endpoint) {
      case 'send/sms':
        return send(call, user);
      case 'balances':
        call.result = 'balance';
        return json({ status: true, sms: account.sms ?? DEFAULT_SMS_BALANCE, viber: account.viber ?? 0 });
      case 'status/sms': {
        const fault = takeFault('status/sms', call);
        if (fault) return notAcceptedFault(call, fault.kind);
        return status(call, messagesById.get(Number(params.get('message_id'))), user);
      }
      case 'statusCustom/sms': {
        const fault = takeFault('statusCustom/sms', call);
        if (fault) return notAcceptedFault(call, fault.kind);
        return status(call, messagesByCustomId.get(`${user}\n${call.customId ?? ''}`), user);
      }
    }
  }

  async function handleApiCall(
    endpoint: ApiEndpoint,
    query: string,
    request: http.IncomingMessage,
    response: http.ServerResponse,
  ): Promise<void> {
    const at = Date.now();
    const params = new URLSearchParams(query);
    if (request.method === 'POST') {
      for (const [name, value] of new URLSearchParams(await readBody(request))) params.set(name, value);
    }
    const answer = () => {
      const reply = answerApiCall(endpoint, params, at);
      if (reply !== 'hang') write(response, reply);
    };
    if (latencyMs <= 0) {
      answer();
      return;
    }
    const timer = setTimeout(() => {
      delayedReplies.delete(timer);
      answer();
    }, latencyMs);
    delayedReplies.add(timer);
  }

  function setLatency(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`latency must be a non-negative number of ms, got ${ms}`);
    latencyMs = ms;
  }

  function addAccount(account: SandboxAccount): void {
    accounts.set(account.user, account);
  }

  function reset(): void {
    calls = [];
    messagesByCustomId = new Map();
    messagesById = new Map();
    firedOnce = new Set();
    faults = [];
  }

  function addFault(fault: SandboxFault): void {
    if (!Number.isSafeInteger(fault.count) || fault.count < 1) throw new RangeError(`fault count must be a positive integer, got ${fault.count}`);
    faults.push({ ...fault });
  }

  // Control endpoints let tests and the benchmark running in other processes drive the sandbox.
  async function handleControl(
    action: string,
    query: string,
    request: http.IncomingMessage,
    response: http.ServerResponse,
  ): Promise<void> {
    const ok = json({ ok: true });
    const refuse = (status: number, message: string): Answer => ({ status, contentType: 'application/json', body: JSON.stringify({ error: message }) });
    if (request.method === 'GET' && action === 'calls') return write(response, json(calls));
    if (request.method !== 'POST') return write(response, refuse(404, 'unknown control call'));
    switch (action) {
      case 'reset':
        reset();
        return write(response, ok);
      case 'latency': {
        const ms = Number(new URLSearchParams(query).get('ms') ?? Number.NaN);
        if (!Number.isFinite(ms) || ms < 0) return write(response, refuse(400, 'ms must be a non-negative number'));
        setLatency(ms);
        return write(response, ok);
      }
      case 'faults': {
        let fault: unknown;
        try {
          fault = JSON.parse(await readBody(request));
        } catch {
          return write(response, refuse(400, 'body must be JSON'));
        }
        if (!isSandboxFault(fault)) {
          return write(response, refuse(400, `body must be {"kind": ${SANDBOX_FAULT_KINDS.join('|')}, "count": positive integer, "endpoint"?, "user"?, "msisdn"?, "customId"?, "hideFromLookup"?}`));
        }
        addFault(fault);
        return write(response, ok);
      }
      case 'accounts': {
        let account: unknown;
        try {
          account = JSON.parse(await readBody(request));
        } catch {
          return write(response, refuse(400, 'body must be JSON'));
        }
        if (!isSandboxAccount(account)) return write(response, refuse(400, 'body must be {"user": string, "apiKey": string, "sms"?: number, "viber"?: number}'));
        addAccount(account);
        return write(response, ok);
      }
      default:
        return write(response, refuse(404, 'unknown control call'));
    }
  }

  const server = http.createServer((request, response) => {
    const url = request.url ?? '/';
    const queryAt = url.indexOf('?');
    const path = queryAt === -1 ? url : url.slice(0, queryAt);
    const query = queryAt === -1 ? '' : url.slice(queryAt + 1);
    let handling: Promise<void>;
    if (path.startsWith('/__sandbox/')) {
      handling = handleControl(path.slice('/__sandbox/'.length), query, request, response);
    } else {
      const endpoint = path.startsWith('/api/') ? path.slice('/api/'.length) : path.slice(1);
      if (!isApiEndpoint(endpoint)) {
        write(response, { status: 404, contentType: 'text/plain', body: 'Not found' });
        return;
      }
      handling = handleApiCall(endpoint, query, request, response);
    }
    // Only a broken request body gets here; the client has gone, so drop the connection.
    handling.catch(() => request.socket.destroy());
  });

  const port = options.port ?? 0;
  const host = options.host ?? '127.0.0.1';
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const urlHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;

  return {
    url: `http://${urlHost}:${address.port}/api`,
    port: address.port,
    calls: () => [...calls],
    acceptedSends: () => calls.filter((call) => call.endpoint === 'send/sms' && call.messageId !== undefined),
    reset,
    setLatency,
    addAccount,
    addFault,
    faultsLeft: () => faults.reduce((sum, f) => sum + f.count, 0),
    inFlight: () => delayedReplies.size,
    close: () =>
      new Promise<void>((resolve, reject) => {
        for (const timer of delayedReplies) clearTimeout(timer);
        delayedReplies.clear();
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function isSandboxFault(value: unknown): value is SandboxFault {
  if (typeof value !== 'object' || value === null) return false;
  const { kind, count, endpoint, user, msisdn, customId, hideFromLookup } = value as Record<string, unknown>;
  return (
    (SANDBOX_FAULT_KINDS as readonly unknown[]).includes(kind) &&
    typeof count === 'number' &&
    Number.isSafeInteger(count) &&
    count >= 1 &&
    (endpoint === undefined || endpoint === 'send/sms' || endpoint === 'statusCustom/sms' || endpoint === 'status/sms') &&
    (user === undefined || typeof user === 'string') &&
    (msisdn === undefined || typeof msisdn === 'string') &&
    (customId === undefined || typeof customId === 'string') &&
    (hideFromLookup === undefined || typeof hideFromLookup === 'boolean')
  );
}

function isSandboxAccount(value: unknown): value is SandboxAccount {
  if (typeof value !== 'object' || value === null) return false;
  const { user, apiKey, sms, viber } = value as Record<string, unknown>;
  return (
    typeof user === 'string' &&
    typeof apiKey === 'string' &&
    (sms === undefined || typeof sms === 'number') &&
    (viber === undefined || typeof viber === 'number')
  );
}
