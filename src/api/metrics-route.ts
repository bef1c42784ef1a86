import { Router } from 'express';
import { PROMETHEUS_CONTENT_TYPE } from '../metrics/exposition.ts';

export interface MetricsRouteDeps {
  /** The whole exposition, read fresh on every scrape (queue-monitor.ts). */
  prometheusText(): Promise<string>;
}

/** `GET /metrics` in the Prometheus text format; for operators only (app.ts mounts the guard). */
export function metricsRoute(deps: MetricsRouteDeps): Router {
  const router = Router();
  router.get('/metrics', async (_req, res) => {
    const text = await deps.prometheusText();
    res.setHeader('Cache-Control', 'no-store');
    res.type(PROMETHEUS_CONTENT_TYPE).send(text);
  });
  return router;
}
