import express, { type Express } from 'express';
import type { Db } from './db/database.ts';
import type { Logger } from './logger.ts';
import type { AcceptDeps } from './messages/accept.ts';
import type { ApiToken } from './api/auth.ts';
import { identify, rejectBadCredentials, requireCallerWhenTokens, requireOperator, type AccessPolicy } from './api/access.ts';
import type { CredentialThrottle } from './api/credential-throttle.ts';
import { requestRateLimit, type RequestRateLimiter } from './api/request-rate-limit.ts';
import { docsRoute } from './api/docs-route.ts';
import { errorHandler, notFoundHandler } from './api/errors.ts';
import { messageRoute, type MessageRouteDeps } from './api/message-route.ts';
import { balanceRoute } from './api/balance-route.ts';
import { reportRoutes } from './api/report-routes.ts';
import type { AdminCredentials } from './api/admin-auth.ts';
import type { BalancePorts } from './enterprises/balance.ts';
import type { BalanceCache } from './balance-watch/balance-cache.ts';
import { sendRoute } from './api/send-route.ts';
import { serviceRoutes, type HealthProbes, type ServiceInfo } from './api/service-routes.ts';
import { metricsRoute, type MetricsRouteDeps } from './api/metrics-route.ts';
import { dashboardRoutes, type DashboardDeps } from './api/dashboard.ts';
import { messageConsoleRoutes } from './console/message-console-routes.ts';

export interface AppDeps {
  logger: Logger;
  db: Db;
  accept: AcceptDeps;
  probes: HealthProbes;
  info: ServiceInfo;
  trustedProxies: string;
  bodyLimitBytes: number;
  /** API_TOKENS; undefined: caller authentication off */
  apiTokens?: readonly ApiToken[] | undefined;
  /** undefined: no per-caller request limit */
  requestRateLimiter?: RequestRateLimiter | undefined;
  /** WebSMS balance reads for GET /enterprises/{number}/balance; undefined: that route is not mounted */
  websmsBalance?: BalancePorts['websms'] | undefined;
  /** the balance watch's cache, which that route answers from; undefined: it always asks WebSMS */
  balanceCache?: BalanceCache | undefined;
  /** ADMIN_USER/ADMIN_PASSWORD for the operator surfaces; undefined: operators are direct local peers (access.ts) */
  admin?: AdminCredentials | undefined;
  /** failed credentials per client (Redis); undefined: not counted */
  credentialThrottle?: CredentialThrottle | undefined;
  /** cancel for DELETE /messages/{id} (queue/inspection.ts) */
  cancelMessage: MessageRouteDeps['cancel'];
  /** retry of one message for the message console (queue/inspection.ts retryMessage); undefined: no retry there */
  retryMessage?: MessageRouteDeps['cancel'] | undefined;
  /** GET /metrics (metrics-route.ts); undefined: not mounted */
  metrics?: MetricsRouteDeps | undefined;
  /** the queue dashboard on /admin/queues (dashboard.ts); undefined: not mounted */
  dashboard?: DashboardDeps | undefined;
}

/** The Express app without listen(): tests drive it directly. Thin: parse → call → respond. */
export function buildApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', trustProxySetting(deps.trustedProxies));
  // Who is calling, before any body is read (access.ts): closed by default, so every surface the old
  // service did not have is guarded below, by path prefix (matched like routes: any case).
  const policy: AccessPolicy = { apiTokens: deps.apiTokens, admin: deps.admin, throttle: deps.credentialThrottle, logger: deps.logger };
  app.use(identify(policy));
  if (deps.requestRateLimiter) app.use(requestRateLimit(deps.requestRateLimiter, deps.logger));
  app.use(rejectBadCredentials);
  const operatorOnly = requireOperator(policy);
  app.use(['/reports', '/metrics', '/admin'], operatorOnly);
  app.use('/enterprises', requireOperator(policy, { orCaller: true }));
  app.use('/send', requireCallerWhenTokens(policy));
  app.use(express.json({ limit: deps.bodyLimitBytes, type: ['application/json', 'application/*+json'] }));
  app.use(serviceRoutes(deps.info, deps.probes));
  app.use(sendRoute(deps.accept));
  app.use(messageRoute({ db: deps.db, logger: deps.logger, cancel: deps.cancelMessage, throttle: deps.credentialThrottle, standing: deps.accept.standing }));
  if (deps.websmsBalance) app.use(balanceRoute({ db: deps.db, websms: deps.websmsBalance, cache: deps.balanceCache }));
  app.use(reportRoutes(deps.db));
  if (deps.metrics) app.use(metricsRoute(deps.metrics));
  if (deps.dashboard) app.use(dashboardRoutes(deps.dashboard));
  // The message console on /admin/messages; it acts only where the queue dashboard may (DASHBOARD_READ_ONLY).
  app.use(
    messageConsoleRoutes({
      db: deps.db,
      logger: deps.logger,
      readOnly: deps.dashboard?.readOnly ?? true,
      standing: deps.accept.standing,
      cancel: deps.cancelMessage,
      retry: deps.retryMessage,
    }),
  );
  app.use(docsRoute());
  app.use(notFoundHandler);
  app.use(errorHandler(deps.logger));
  return app;
}

/** TRUSTED_PROXIES: "loopback" (default), a comma list of addresses/subnets, "true", "false" or a hop count. */
function trustProxySetting(value: string): boolean | number | string {
  if (value === 'true') return true;
  if (value === 'false' || value === 'none' || value === '') return false;
  if (/^\d+$/.test(value)) return Number(value);
  return value;
}
