import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import type { Config } from './config.ts';
import type { Logger } from './logger.ts';
import { createDeps, type Deps } from './deps.ts';
import { lowerPriority } from './process-priority.ts';
import { createRedis } from './redis-connection.ts';
import { createRequestRateLimiter } from './api/request-rate-limit.ts';
import { createCredentialThrottle } from './api/credential-throttle.ts';
import { cancelMessage, inspectionPorts, retryMessage } from './queue/inspection.ts';
import { answerMalformedRequests } from './api/malformed-http.ts';
import type { AcceptDeps } from './messages/accept.ts';
import { createSweeper } from './messages/sweeper.ts';
import { createDeliveryPoller } from './delivery/poller.ts';
import { messageStanding } from './line/standing.ts';
import { restoreLine } from './line/turns.ts';
import { createCompletionWaiter } from './queue/completion-waiter.ts';
import { jobIdFor } from './queue/jobs.ts';
import { createSendWorker } from '../workers/send-worker.ts';
import { createQueueMonitor } from './metrics/queue-monitor.ts';
import { createWorkerTelemetry, type WorkerTelemetry } from './metrics/worker-telemetry.ts';
import { serviceMetricSources } from './metrics/service-families.ts';
import { createBalanceCache } from './balance-watch/balance-cache.ts';
import { DEFAULT_REFRESH_CONCURRENCY } from './balance-watch/refresh-balances.ts';
import { startBalanceWatch } from '../workers/balance-worker.ts';
import { callbackEmitPorts, startCallbackDelivery } from './callbacks/callback-delivery.ts';
import { callbackMetricsText } from './callbacks/callback-metrics.ts';

// The roles a process can play: the API, a worker (sends, and by default the background work too),
// the background work alone. All are stateless: run as many of each as needed.

export interface Running {
  /** Graceful: stop taking work, finish or hand back what is in flight, close connections. */
  stop(): Promise<void>;
}

export interface RunningApi extends Running {
  url: string;
  deps: Deps;
}

export async function startApi(config: Config, logger: Logger): Promise<RunningApi> {
  // Loaded here, not at the top: worker processes never need the HTTP side (Express, the dashboards,
  // the request schemas with their phone metadata), and are about 27 MB smaller without it.
  const { buildApp } = await import('./app.ts');
  const deps = await createDeps(config, logger, 'api');
  // The event stream blocks on its connection: it gets its own.
  const eventsRedis = createRedis(config.redis, 'blocking', 'user-sms-events');
  eventsRedis.on('error', () => undefined);
  const waiter = createCompletionWaiter(eventsRedis, config.queuePrefix);
  await waiter.ready();

  const accept: AcceptDeps = {
    db: deps.db,
    logger,
    defaultSender: config.websms.defaultSender,
    defaultServiceName: config.defaultServiceName,
    sendWaitMs: config.sendWaitMs,
    enqueue: deps.enqueueInLine,
    waitForJob: (messageId, deadlineMs) => waiter.wait(jobIdFor(messageId), deadlineMs),
    standing: (record) => messageStanding(deps.line, record),
    idempotencyRetentionS: config.idempotencyRetentionS,
    dailyCapPerEnterprise: config.dailyCapPerEnterprise,
    callbackHosts: config.callbacks.allowedHosts,
  };
  const balanceCache = createBalanceCache(deps.redis, config.queuePrefix);
  // A caller's cancel raises its message.failed like any other final status.
  const callbackEvents = callbackEmitPorts(deps.db, logger);
  // A caller's cancel, and the message console's buttons: the jobs CLI's own use cases.
  const operatorPorts = inspectionPorts(deps, callbackEvents);
  const monitor = createQueueMonitor(deps.redis, deps.queue, config.queuePrefix, Date.now, serviceMetricSources(deps, balanceCache));
  const app = buildApp({
    logger,
    db: deps.db,
    accept,
    info: { port: config.port, websmsSendUrl: `${config.websms.baseUrl}/send/sms`, defaultSender: config.websms.defaultSender },
    probes: {
      database: async () => {
        await deps.db.selectNoFrom((eb) => eb.lit(1).as('one')).execute();
      },
      redis: async () => {
        await deps.redis.ping();
      },
      queueCounts: () => deps.queue.getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed'),
      workerCount: () => deps.queue.getWorkersCount(),
      oldestWaitingAgeMs: monitor.oldestWaitingAgeMs,
      liveWorkerCount: async () => (await monitor.liveWorkers()).length,
    },
    trustedProxies: config.trustedProxies,
    bodyLimitBytes: config.bodyLimitBytes,
    apiTokens: config.apiTokens,
    requestRateLimiter:
      config.requestRateLimit &&
      createRequestRateLimiter(deps.redis, { keyPrefix: config.queuePrefix, limit: config.requestRateLimit.perWindow, windowMs: config.requestRateLimit.windowMs }),
    websmsBalance: deps.websms,
    balanceCache,
    admin: config.admin,
    credentialThrottle:
      config.authFailuresPerMinute > 0 ? createCredentialThrottle(deps.redis, { keyPrefix: config.queuePrefix, limit: config.authFailuresPerMinute, windowMs: 60_000 }) : undefined,
    cancelMessage: (messageId, by) => cancelMessage(operatorPorts, { messageId, by }),
    metrics: { prometheusText: async () => (await monitor.prometheusText()) + (await callbackMetricsText(deps.redis, deps.db, config.queuePrefix)) },
    dashboard: { queue: deps.queue, readOnly: config.dashboard.readOnly },
    // The message console's retry button: the jobs CLI's own retry (queue/inspection.ts).
    retryMessage: (messageId, by) => retryMessage(operatorPorts, { messageId, by }),
  });

  const server: Server = app.listen(config.port, config.host);
  answerMalformedRequests(server);
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  // Keep-alive sockets from proxies must outlive theirs, or requests race a closing socket.
  server.keepAliveTimeout = 65_000;
  const { port } = server.address() as AddressInfo;
  logger.info({ host: config.host, port }, 'api listening');

  return {
    url: `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${port}`,
    deps,
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Waiting requests are answered now with where their message stands (202 + id): the
      // messages themselves stay queued and will be sent.
      waiter.releaseAll();
      // Keep-alive sockets become idle as their last answers go out: close them as they do, and
      // cut whatever is left after a grace period.
      const sweepIdle = setInterval(() => server.closeIdleConnections(), 100);
      server.closeIdleConnections();
      const hardClose = setTimeout(() => server.closeAllConnections(), 5_000);
      await closed;
      clearInterval(sweepIdle);
      clearTimeout(hardClose);
      await waiter.close();
      eventsRedis.disconnect();
      await deps.close();
      logger.info('api stopped');
    },
  };
}


/** A claimed delivery check not recorded within this comes back: longer than a round of look-ups takes. */
const DELIVERY_CHECK_LEASE_MS = 10 * 60_000;
/** WebSMS accounts one worker asks about at the same time; each account one look-up at a time. */
const DELIVERY_ACCOUNT_CONCURRENCY = 4;

/** What a worker process runs: sends (the queue's jobs), the background work, or both. */
export interface WorkerTasks {
  send: boolean;
  background: boolean;
}

/**
 * A worker process. Sends: the send queue's jobs. The background work: delivery look-ups, the callback
 * events that message changes leave owed and their deliveries, the sweeper of lost jobs, balance
 * refreshes. None of it is on a send's path; by default one
 * process does both (WORKER_BACKGROUND), and `npm start` gives the background work a process of its
 * own at a lower CPU priority (startBackground).
 */
export async function startWorker(config: Config, logger: Logger, tasks: WorkerTasks = { send: true, background: config.worker.background }): Promise<Running> {
  const deps = await createDeps(config, logger, tasks.send ? 'worker' : 'background');
  const telemetry = createWorkerTelemetry(config.redis, config.queuePrefix, logger);
  // Events for callers that gave a callback_url (src/callbacks): owed by the statement that changes the
  // message (a send's outcome, a delivery status), raised and delivered by the background work when
  // callbacks are on.
  const callbackDelivery = tasks.background
    ? startCallbackDelivery({
        db: deps.db,
        logger,
        settings: config.callbacks,
        redis: config.redis,
        prefix: config.queuePrefix,
      })
    : undefined;
  const sends = tasks.send ? await startSends(config, logger, deps, telemetry) : undefined;
  const background = tasks.background ? await startBackgroundWork(config, logger, deps, telemetry) : undefined;
  logger.info({ concurrency: tasks.send ? config.worker.concurrency : 0, background: tasks.background }, tasks.send ? 'worker started' : 'background work started');

  return {
    async stop() {
      await background?.stop();
      await sends?.stop();
      await callbackDelivery?.stop();
      await telemetry.stop();
      await deps.close();
      logger.info(tasks.send ? 'worker stopped' : 'background work stopped');
    },
  };
}

/**
 * The background work alone, in a process that gives way to the others when CPU is short: its
 * priority is lowered to BACKGROUND_NICE (process-priority.ts: every thread, and its session's
 * scheduling group when the session is its own).
 */
export async function startBackground(config: Config, logger: Logger): Promise<Running> {
  if (config.backgroundNice > 0) lowerPriority(config.backgroundNice, logger);
  return startWorker(config, logger, { send: false, background: true });
}

/** The send queue's worker. */
async function startSends(config: Config, logger: Logger, deps: Deps, telemetry: WorkerTelemetry): Promise<Running> {
  const workerRedis = createRedis(config.redis, 'blocking', 'user-sms-worker-jobs');
  workerRedis.on('error', () => undefined);
  const worker = createSendWorker(
    {
      db: deps.db,
      websms: deps.websms,
      line: deps.linePorts,
      logger,
      defaultSender: config.websms.defaultSender,
      websmsTimeoutMs: config.websms.timeoutMs,
      firstDeliveryCheckAfterMs: config.deliveryPoll.scheduleMs[0],
      metrics: telemetry.metrics,
    },
    {
      connection: workerRedis,
      prefix: config.queuePrefix,
      concurrency: config.worker.concurrency,
    },
  );
  worker.on('error', (error) => logger.warn({ err: error.message }, 'worker error'));
  worker.on('failed', (job, error) => {
    if (job && job.attemptsMade >= (job.opts.attempts ?? 1)) {
      logger.error({ messageId: job.data.messageId, enterprise: job.data.enterpriseNumber, err: error.message }, 'job failed for good');
    }
  });
  await worker.waitUntilReady();
  telemetry.start(worker);
  return {
    async stop() {
      // Waits for running jobs; a job cut off later (kill -9) comes back as stalled.
      await worker.close();
      workerRedis.disconnect();
    },
  };
}

/** Delivery look-ups, the sweeper of lost jobs and the balance watch (callback delivery is started beside it). */
async function startBackgroundWork(config: Config, logger: Logger, deps: Deps, telemetry: WorkerTelemetry): Promise<Running> {
  const sweeper = createSweeper(
    {
      db: deps.db,
      logger,
      jobState: deps.jobState,
      // A job lost with Redis comes back behind its line, rebuilt from the rows, so order survives.
      enqueue: async (messageId, enterpriseNumber) => {
        await restoreLine(deps.linePorts, enterpriseNumber, messageId);
        await deps.enqueue(messageId, enterpriseNumber);
      },
      retryFailed: deps.retryFailed,
    },
    { intervalMs: config.sweeper.intervalMs, idleMs: config.sweeper.pendingAfterMs },
  );
  sweeper.start();
  const deliveryPoller = createDeliveryPoller(
    {
      db: deps.db,
      websms: deps.websms,
      logger,
      // A final status's callback event is owed by the statement that recorded it (callback_owed), and
      // raised by the owed-event raiser after the message's earlier events: in order.
      onFinal: (finals) => {
        for (const { enterpriseNumber, status, sentAt } of finals) telemetry.metrics.deliveryFinal(enterpriseNumber, status, sentAt ? Date.now() - sentAt.getTime() : null);
      },
    },
    { ...config.deliveryPoll, leaseMs: DELIVERY_CHECK_LEASE_MS, accountConcurrency: DELIVERY_ACCOUNT_CONCURRENCY },
  );
  deliveryPoller.start();
  // Every enterprise's WebSMS balance, refreshed in the background: one round at a time for all workers.
  const balanceWatch = await startBalanceWatch(
    { db: deps.db, websms: deps.websms, cache: createBalanceCache(deps.redis, config.queuePrefix), logger },
    { redis: deps.redis, target: config.redis, prefix: config.queuePrefix, refreshMs: config.balanceRefreshS * 1_000, concurrency: DEFAULT_REFRESH_CONCURRENCY },
  );
  return {
    async stop() {
      await sweeper.stop();
      await balanceWatch.stop();
      await deliveryPoller.stop();
    },
  };
}
