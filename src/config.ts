import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { parseApiTokens, type ApiToken } from './api/auth.ts';
import { callbackSettings, type CallbackSettings } from './callbacks/callback-settings.ts';
import { callbackHostProblem } from './callbacks/callback-hosts.ts';
import { parseSchedule } from './delivery/delivery-status.ts';
import { hasHashTag, parseHostPorts, type RedisTarget } from './redis-connection.ts';

// The only reader of process.env. Every budget carries its unit in its name.

const integer = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const flag = (fallback: 'true' | 'false') =>
  z
    .enum(['true', 'false', '1', '0', 'yes', 'no', 'on', 'off'], 'must be true or false')
    .default(fallback)
    .transform((value) => ['true', '1', 'yes', 'on'].includes(value));

const url = (protocols: string[]) =>
  z.string().refine((value) => {
    try {
      return protocols.includes(new URL(value).protocol);
    } catch {
      return false;
    }
  }, `must be a URL (${protocols.join(' or ')})`);

const environmentSchema = z.object({
  PORT: integer(0, 65535).default(8014),
  HOST: z.string().min(1).default('127.0.0.1'),
  DATABASE_URL: url(['postgres:', 'postgresql:']).default('postgresql://postgres@127.0.0.1:5432/postgres'),
  // Per process. Statements are short and no connection is held across a WebSMS call, so a few
  // connections serve many concurrent jobs; PostgreSQL's own limit is shared by every process.
  DATABASE_POOL_SIZE: integer(1, 200).default(10),
  REDIS_URL: url(['redis:', 'rediss:']).default('redis://127.0.0.1:6379'),
  // Redis under Sentinel: the sentinels (host:port,…) and the name of the master they watch. Every
  // connection asks them where the master is, so it follows a failover. REDIS_URL keeps giving the
  // password, database and TLS; its host and port are not used.
  REDIS_SENTINELS: z.string().optional(),
  REDIS_SENTINEL_MASTER: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'letters, digits, . _ - only').optional(),
  // Only when the sentinels themselves require a password (their requirepass).
  REDIS_SENTINEL_PASSWORD: z.string().optional(),
  // Redis Cluster: some of its nodes (host:port,…); the client learns the rest. Needs QUEUE_PREFIX
  // with a {hash tag}, so that every key of the service lives in one slot.
  REDIS_CLUSTER_NODES: z.string().optional(),
  // Replicas that must hold a send's rate-limit grant before WebSMS is called (Redis WAIT), so that a
  // failover cannot lose it. Default: 1 under Sentinel, 0 otherwise (a single Redis has no replica).
  REDIS_GRANT_REPLICAS: integer(0, 16).optional(),
  // How long a grant waits for those replicas; unacknowledged, the send waits too (fail closed).
  REDIS_GRANT_WAIT_MS: integer(10, 10_000).default(500),
  WEBSMS_BASE_URL: url(['http:', 'https:']).default('https://cabinet.websms.by/api'),
  WEBSMS_DEFAULT_SENDER: z.string().min(1).max(11).default('Vochi-CRM'),
  WEBSMS_TIMEOUT_MS: integer(100, 120_000).default(30_000),
  // GET is what the old service used against the real API; POST keeps keys out of URLs.
  WEBSMS_METHOD: z.enum(['GET', 'POST']).default('GET'),
  RATE_LIMIT_PER_WINDOW: integer(1, 10_000).default(3),
  RATE_LIMIT_WINDOW_MS: integer(100, 86_400_000).default(60_000),
  // Added to the window so that the delay between our slot and WebSMS's receipt of the request
  // (event loop, a cold TLS connection: up to ~0.7 s seen on a freshly started worker) can never
  // make two sends look closer than the window from the provider's side. 1 s of 60 costs < 2 %.
  RATE_LIMIT_MARGIN_MS: integer(0, 60_000).default(1_000),
  // Below nginx's 30 s proxy_read_timeout, with room for the answer itself.
  SEND_WAIT_MS: integer(0, 29_000).default(25_000),
  WORKER_CONCURRENCY: integer(1, 1000).default(64),
  // Worker processes that `npm start` runs beside the API: one per CPU this process may run on, so a
  // bigger machine sends more without a setting.
  WORKER_PROCESSES: integer(0, 64).default(Math.min(64, Math.max(1, availableParallelism()))),
  // Whether a worker process also does the background work (delivery look-ups, callbacks, the
  // sweepers, balance refreshes) beside its sends. `npm start` sets it false for its workers and runs
  // that work in a background process of its own; a worker started alone does both unless told not to.
  WORKER_BACKGROUND: flag('true'),
  // The background process's nice value (0 to 19; 0 leaves it as it was started): it gives way to the
  // sends and the API when CPU is short, and catches up when it is not.
  BACKGROUND_NICE: integer(0, 19).default(10),
  // Send attempts per message for failures that are certainly not sent (error 1/7, refused
  // connections) and outcome lookups that could not be made.
  SEND_ATTEMPTS: integer(1, 50).default(8),
  RETRY_BACKOFF_MS: integer(10, 600_000).default(2_000),
  SWEEP_INTERVAL_MS: integer(1_000, 3_600_000).default(30_000),
  // A row left `pending` this long has lost its enqueue (Redis was down): the sweeper enqueues it.
  SWEEP_PENDING_AFTER_MS: integer(1_000, 3_600_000).default(15_000),
  // Finished jobs stay in Redis this long so that late waiters and the dashboard can still read them.
  KEEP_FINISHED_JOBS_S: integer(60, 30 * 86_400).default(3_600),
  // Must be a BullMQ-safe prefix; the hash tag keeps all queue keys in one Redis Cluster slot.
  QUEUE_PREFIX: z.string().regex(/^[A-Za-z0-9_{}.-]{1,64}$/, 'letters, digits, _ . - { } only').default('{sms}'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  // Express "trust proxy" value: peers allowed to set X-Forwarded-For / X-Real-IP.
  TRUSTED_PROXIES: z.string().default('loopback'),
  BODY_LIMIT_BYTES: integer(1_024, 10_485_760).default(65_536),
  // Operator surfaces (reports, balance, metrics, dashboard). No default password: unset means
  // they answer only to a direct local peer (loopback, no proxy headers), never through a proxy.
  ADMIN_USER: z.string().min(1).optional(),
  ADMIN_PASSWORD: z.string().min(8, 'must be at least 8 characters').optional(),
  // The queue dashboard only shows jobs unless this is false. Its write actions (retry, remove, add,
  // pause) act on Redis alone and bypass the message rows that are the truth; `npm run jobs` is the
  // way to retry or drop a message, and it records the action on the row.
  DASHBOARD_READ_ONLY: flag('true'),
  // Caller authentication for the API: unset means off, as the old service's callers send no token.
  // `name:sha256(token):enterprises;…` (src/api/auth.ts).
  API_TOKENS: z.string().optional(),
  // service_name of a send whose caller names itself neither by token nor by X-Service-Name. The old
  // service recorded 'user_api_endpoint' for every send through its API; keeping it lets queries over
  // old and new rows count such callers together. Same characters as token names (VARCHAR(50)).
  DEFAULT_SERVICE_NAME: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,50}$/, 'must be 1–50 letters, digits, ".", "_" or "-"')
    .default('user_api_endpoint'),
  // Failed credentials (bad token, bad operator password, wrong status key) per client address and
  // minute, all API processes together; past it the client gets 429. 0 = not counted (not advised).
  AUTH_FAILURES_PER_MINUTE: integer(0, 10_000).default(10),
  // How long an Idempotency-Key names its message (24 h: a day of client retries, as is customary).
  IDEMPOTENCY_RETENTION_S: integer(1, 30 * 86_400).default(86_400),
  // Per-caller HTTP requests per window, all API processes together; 0 = off (the default: nginx's
  // limit_req guards the edge, and the old service's callers have no limit to rely on).
  REQUEST_RATE_LIMIT_PER_WINDOW: integer(0, 1_000_000).default(0),
  REQUEST_RATE_LIMIT_WINDOW_MS: integer(1_000, 3_600_000).default(60_000),
  // When a sent message's delivery status is asked (ms after the send): operators keep trying to
  // reach a phone that is off for a day or more, so the last look is a day later.
  DELIVERY_POLL_SCHEDULE_MS: z.string().default('60000,300000,1800000,7200000,21600000,86400000'),
  // How often each worker looks for due delivery checks (an indexed query that is empty when idle).
  DELIVERY_POLL_INTERVAL_MS: integer(100, 600_000).default(2_000),
  DELIVERY_POLL_BATCH: integer(1, 1_000).default(100),
  // After WebSMS's error 7 on a status look-up, that account's checks wait this long.
  DELIVERY_POLL_BACKOFF_MS: integer(1_000, 3_600_000).default(60_000),
  // Messages accepted per enterprise per server-local day; 0 = no cap (the default).
  DAILY_CAP_PER_ENTERPRISE: integer(0, 10_000_000).default(0),
  // How often the balance watch reads every enterprise's WebSMS balance (one round for all workers):
  // 10 minutes sees a balance run down long before a day's sends do, at a few calls an hour per account.
  BALANCE_REFRESH_S: integer(1, 86_400).default(600),
  // Callbacks (src/callbacks): off until CALLBACK_ALLOWED_HOSTS names a host (comma list of names or
  // addresses, each optionally :port); then CALLBACK_SIGNING_SECRET (whsec_…) is required.
  CALLBACK_ALLOWED_HOSTS: z.string().optional(),
  CALLBACK_SIGNING_SECRET: z.string().optional(),
  // One delivery attempt, connection to the last byte of the answer.
  CALLBACK_TIMEOUT_MS: integer(100, 120_000).default(10_000),
  // The first retry comes after this; each next one after twice the previous wait, at most an hour.
  CALLBACK_RETRY_BACKOFF_MS: integer(10, 3_600_000).default(10_000),
  // How long an event is retried before it is given up (an operator can retry it: npm run jobs).
  CALLBACK_RETRY_FOR_S: integer(1, 30 * 86_400).default(86_400),
  // Deliveries in flight per process that delivers callbacks (the background process, or each worker
  // that does background work): modest, they wait on other people's servers.
  CALLBACK_CONCURRENCY: integer(1, 200).default(16),
});

export type Environment = z.infer<typeof environmentSchema>;

export interface Config {
  readonly port: number;
  readonly host: string;
  readonly databaseUrl: string;
  readonly databasePoolSize: number;
  /** REDIS_URL as given (in Sentinel and Cluster set-ups it carries only credentials and database) */
  readonly redisUrl: string;
  /** where Redis is: one server, a Sentinel-watched master, or a Cluster (src/redis-connection.ts) */
  readonly redis: RedisTarget;
  /** replicas that acknowledge a rate-limit grant before its send, and how long that may take */
  readonly grantReplication: { readonly replicas: number; readonly waitMs: number };
  readonly websms: {
    readonly baseUrl: string;
    readonly defaultSender: string;
    readonly timeoutMs: number;
    readonly method: 'GET' | 'POST';
  };
  readonly rateLimit: { readonly perWindow: number; readonly windowMs: number; readonly marginMs: number };
  readonly sendWaitMs: number;
  readonly worker: {
    readonly concurrency: number;
    readonly processes: number;
    /** WORKER_BACKGROUND: also runs the background work (roles.ts) */
    readonly background: boolean;
    readonly sendAttempts: number;
    readonly retryBackoffMs: number;
  };
  /** BACKGROUND_NICE: the background process's CPU priority (roles.ts) */
  readonly backgroundNice: number;
  readonly sweeper: { readonly intervalMs: number; readonly pendingAfterMs: number };
  readonly keepFinishedJobsS: number;
  readonly queuePrefix: string;
  readonly logLevel: Environment['LOG_LEVEL'];
  readonly trustedProxies: string;
  readonly bodyLimitBytes: number;
  readonly admin: { readonly user: string; readonly password: string } | undefined;
  readonly dashboard: { readonly readOnly: boolean };
  /** undefined: caller authentication is off */
  readonly apiTokens: readonly ApiToken[] | undefined;
  /** service_name recorded when neither a token nor X-Service-Name names the caller */
  readonly defaultServiceName: string;
  readonly idempotencyRetentionS: number;
  /** 0: failed credentials are not counted */
  readonly authFailuresPerMinute: number;
  /** undefined: no per-caller request limit */
  readonly requestRateLimit: { readonly perWindow: number; readonly windowMs: number } | undefined;
  readonly deliveryPoll: {
    readonly scheduleMs: readonly number[];
    readonly intervalMs: number;
    readonly batchSize: number;
    readonly backoffMs: number;
  };
  /** undefined: no daily cap */
  readonly dailyCapPerEnterprise: number | undefined;
  /** the balance watch's interval */
  readonly balanceRefreshS: number;
  /** callback_url events; allowedHosts empty: off */
  readonly callbacks: CallbackSettings;
}

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Validates the environment once; a bad value names the variable and stops start-up. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  // Empty strings mean "unset", as in most shells' `VAR= command`.
  const present = Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined && value !== ''));
  const parsed = environmentSchema.safeParse(present);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.')}: ${issue.message}`);
    throw new ConfigError(`Invalid configuration: ${problems.join('; ')}`);
  }
  const e = parsed.data;
  if ((e.ADMIN_USER === undefined) !== (e.ADMIN_PASSWORD === undefined)) {
    throw new ConfigError('Invalid configuration: ADMIN_USER and ADMIN_PASSWORD must be set together');
  }
  let deliveryScheduleMs: number[];
  try {
    deliveryScheduleMs = parseSchedule(e.DELIVERY_POLL_SCHEDULE_MS);
  } catch (error) {
    throw new ConfigError(`Invalid configuration: DELIVERY_POLL_SCHEDULE_MS: ${error instanceof Error ? error.message : String(error)}`);
  }
  let apiTokens: ApiToken[] | undefined;
  try {
    apiTokens = e.API_TOKENS === undefined ? undefined : parseApiTokens(e.API_TOKENS);
  } catch (error) {
    throw new ConfigError(`Invalid configuration: API_TOKENS: ${error instanceof Error ? error.message : String(error)}`);
  }
  let callbacks: CallbackSettings;
  try {
    callbacks = callbackSettings(e);
  } catch (error) {
    throw new ConfigError(`Invalid configuration: ${error instanceof Error ? error.message : String(error)}`);
  }
  const redis = redisTarget(e);
  for (const token of apiTokens ?? []) {
    const problem = token.callbackUrl === undefined ? undefined : callbackHostProblem(token.callbackUrl, callbacks.allowedHosts);
    if (problem) throw new ConfigError(`Invalid configuration: API_TOKENS: ${token.name}'s callback_url: ${problem}`);
  }
  return Object.freeze({
    port: e.PORT,
    host: e.HOST,
    databaseUrl: e.DATABASE_URL,
    databasePoolSize: e.DATABASE_POOL_SIZE,
    redisUrl: e.REDIS_URL,
    redis,
    grantReplication: Object.freeze({ replicas: e.REDIS_GRANT_REPLICAS ?? (redis.kind === 'sentinel' ? 1 : 0), waitMs: e.REDIS_GRANT_WAIT_MS }),
    websms: Object.freeze({
      baseUrl: e.WEBSMS_BASE_URL.replace(/\/+$/, ''),
      defaultSender: e.WEBSMS_DEFAULT_SENDER,
      timeoutMs: e.WEBSMS_TIMEOUT_MS,
      method: e.WEBSMS_METHOD,
    }),
    rateLimit: Object.freeze({
      perWindow: e.RATE_LIMIT_PER_WINDOW,
      windowMs: e.RATE_LIMIT_WINDOW_MS,
      marginMs: e.RATE_LIMIT_MARGIN_MS,
    }),
    sendWaitMs: e.SEND_WAIT_MS,
    worker: Object.freeze({
      concurrency: e.WORKER_CONCURRENCY,
      processes: e.WORKER_PROCESSES,
      background: e.WORKER_BACKGROUND,
      sendAttempts: e.SEND_ATTEMPTS,
      retryBackoffMs: e.RETRY_BACKOFF_MS,
    }),
    backgroundNice: e.BACKGROUND_NICE,
    sweeper: Object.freeze({ intervalMs: e.SWEEP_INTERVAL_MS, pendingAfterMs: e.SWEEP_PENDING_AFTER_MS }),
    keepFinishedJobsS: e.KEEP_FINISHED_JOBS_S,
    queuePrefix: e.QUEUE_PREFIX,
    logLevel: e.LOG_LEVEL,
    trustedProxies: e.TRUSTED_PROXIES,
    bodyLimitBytes: e.BODY_LIMIT_BYTES,
    admin: e.ADMIN_USER && e.ADMIN_PASSWORD ? Object.freeze({ user: e.ADMIN_USER, password: e.ADMIN_PASSWORD }) : undefined,
    dashboard: Object.freeze({ readOnly: e.DASHBOARD_READ_ONLY }),
    apiTokens: apiTokens && Object.freeze(apiTokens.map((token) => Object.freeze(token))),
    defaultServiceName: e.DEFAULT_SERVICE_NAME,
    idempotencyRetentionS: e.IDEMPOTENCY_RETENTION_S,
    authFailuresPerMinute: e.AUTH_FAILURES_PER_MINUTE,
    requestRateLimit:
      e.REQUEST_RATE_LIMIT_PER_WINDOW > 0 ? Object.freeze({ perWindow: e.REQUEST_RATE_LIMIT_PER_WINDOW, windowMs: e.REQUEST_RATE_LIMIT_WINDOW_MS }) : undefined,
    dailyCapPerEnterprise: e.DAILY_CAP_PER_ENTERPRISE > 0 ? e.DAILY_CAP_PER_ENTERPRISE : undefined,
    balanceRefreshS: e.BALANCE_REFRESH_S,
    callbacks,
    deliveryPoll: Object.freeze({
      scheduleMs: Object.freeze(deliveryScheduleMs),
      intervalMs: e.DELIVERY_POLL_INTERVAL_MS,
      batchSize: e.DELIVERY_POLL_BATCH,
      backoffMs: e.DELIVERY_POLL_BACKOFF_MS,
    }),
  });
}

/** Which Redis set-up the variables describe; contradictions stop start-up, naming the variables. */
function redisTarget(e: Environment): RedisTarget {
  const invalid = (message: string) => new ConfigError(`Invalid configuration: ${message}`);
  const list = (name: 'REDIS_SENTINELS' | 'REDIS_CLUSTER_NODES', value: string) => {
    try {
      return Object.freeze(parseHostPorts(value).map((address) => Object.freeze(address)));
    } catch (error) {
      throw invalid(`${name}: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
  if (e.REDIS_SENTINELS !== undefined && e.REDIS_CLUSTER_NODES !== undefined) {
    throw invalid('REDIS_SENTINELS and REDIS_CLUSTER_NODES: set one or the other (Sentinel or Cluster), not both');
  }
  if (e.REDIS_SENTINELS !== undefined) {
    const sentinels = list('REDIS_SENTINELS', e.REDIS_SENTINELS);
    if (e.REDIS_SENTINEL_MASTER === undefined) throw invalid('REDIS_SENTINEL_MASTER: required with REDIS_SENTINELS (the master name the sentinels watch)');
    return Object.freeze({ kind: 'sentinel', url: e.REDIS_URL, sentinels, masterName: e.REDIS_SENTINEL_MASTER, sentinelPassword: e.REDIS_SENTINEL_PASSWORD });
  }
  if (e.REDIS_SENTINEL_MASTER !== undefined) throw invalid('REDIS_SENTINEL_MASTER: only meaningful with REDIS_SENTINELS');
  if (e.REDIS_CLUSTER_NODES !== undefined) {
    const nodes = list('REDIS_CLUSTER_NODES', e.REDIS_CLUSTER_NODES);
    // Queue jobs, lines and counters are read and written together by Lua scripts and MULTI: in a
    // Cluster they must share one slot, which the prefix's hash tag gives them.
    if (!hasHashTag(e.QUEUE_PREFIX)) throw invalid(`QUEUE_PREFIX: with REDIS_CLUSTER_NODES it must contain a {hash tag}, e.g. {sms} (got ${e.QUEUE_PREFIX})`);
    const db = new URL(e.REDIS_URL).pathname.replace(/^\//, '');
    if (db !== '' && db !== '0') throw invalid(`REDIS_URL: a Redis Cluster has only database 0 (got /${db})`);
    return Object.freeze({ kind: 'cluster', url: e.REDIS_URL, nodes });
  }
  return Object.freeze({ kind: 'single', url: e.REDIS_URL });
}
