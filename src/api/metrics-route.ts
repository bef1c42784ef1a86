import { Router } from 'express';
import { PROMETHEUS_CONTENT_TYPE } from '../metrics/exposition.ts';
import { requireAdmin, type AdminCredentials } from './admin-auth.ts';

export interface MetricsRouteDeps {
  /** ADMIN_USER/ADMIN_PASSWORD; undefined: /metrics is as open as /health. */
  admin: AdminCredentials | undefined;
  /** The whole exposition, read fresh on every scrape (queue-monitor.ts). */
  prometheusText(): Promise<string>;
}

/** `GET /metrics` in the Prometheus text format, behind the operator credentials when they are set. */
export function metricsRoute(deps: MetricsRouteDeps): Router {
  const router = Router();
  router.get('/metrics', requireAdmin(deps.admin, 'open'), async (_req, res) => {
    const text = await deps.prometheusText();
    res.setHeader('Cache-Control', 'no-store');
    res.type(PROMETHEUS_CONTENT_TYPE).send(text);
  });
  return router;
}
