import { Router } from 'express';

export interface HealthProbes {
  database(): Promise<void>;
  redis(): Promise<void>;
  queueCounts(): Promise<Record<string, number>>;
  workerCount(): Promise<number>;
}

export interface ServiceInfo {
  port: number;
  websmsSendUrl: string;
  defaultSender: string;
}

/** Every probe gets the same short budget: /health answers fast even when a dependency hangs. */
const PROBE_TIMEOUT_MS = 2_000;

export function serviceRoutes(info: ServiceInfo, probes: HealthProbes): Router {
  const router = Router();

  router.get('/', (_req, res) => {
    res.json({
      service: 'User SMS Sending Service',
      status: 'running',
      timestamp: new Date().toISOString(),
      config: { websms_url: info.websmsSendUrl, default_sender: info.defaultSender, port: info.port },
    });
  });

  router.get('/health', async (_req, res) => {
    const [database, redis, queue, workers] = await Promise.all([
      probe(probes.database()),
      probe(probes.redis()),
      probe(probes.queueCounts()),
      probe(probes.workerCount()),
    ]);
    const workerCount = workers.ok ? workers.value : null;
    // No live worker means nothing will be sent: monitoring must hear about it.
    const healthy = database.ok && redis.ok && queue.ok && workerCount !== null && workerCount > 0;
    res.status(healthy ? 200 : 503).json({
      status: healthy ? 'healthy' : 'unhealthy',
      timestamp: new Date().toISOString(),
      database: database.ok ? 'ok' : `error: ${database.error}`,
      redis: redis.ok ? 'ok' : `error: ${redis.error}`,
      queue: queue.ok ? queue.value : `error: ${queue.error}`,
      workers: workerCount,
      port: info.port,
    });
  });

  return router;
}

type ProbeResult<T> = { ok: true; value: T } | { ok: false; error: string };

async function probe<T>(check: Promise<T>): Promise<ProbeResult<T>> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)), PROBE_TIMEOUT_MS);
  });
  try {
    return { ok: true, value: await Promise.race([check, deadline]) };
  } catch (error) {
    check.catch(() => undefined);
    return { ok: false, error: error instanceof Error ? error.message : String(error) };
  } finally {
    clearTimeout(timer);
  }
}
