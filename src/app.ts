import express, { type Express } from 'express';
import type { Db } from './db/database.ts';
import type { Logger } from './logger.ts';
import type { AcceptDeps } from './messages/accept.ts';
import { docsRoute } from './api/docs-route.ts';
import { errorHandler, notFoundHandler } from './api/errors.ts';
import { messageRoute } from './api/message-route.ts';
import { sendRoute } from './api/send-route.ts';
import { serviceRoutes, type HealthProbes, type ServiceInfo } from './api/service-routes.ts';

export interface AppDeps {
  logger: Logger;
  db: Db;
  accept: AcceptDeps;
  probes: HealthProbes;
  info: ServiceInfo;
  trustedProxies: string;
  bodyLimitBytes: number;
}

/** The Express app without listen(): tests drive it directly. Thin: parse → call → respond. */
export function buildApp(deps: AppDeps): Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', trustProxySetting(deps.trustedProxies));
  app.use(express.json({ limit: deps.bodyLimitBytes, type: ['application/json', 'application/*+json'] }));
  app.use(serviceRoutes(deps.info, deps.probes));
  app.use(sendRoute(deps.accept));
  app.use(messageRoute(deps.db));
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
