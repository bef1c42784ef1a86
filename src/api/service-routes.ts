import { Router } from 'express';

export interface HealthProbes {
  database(): Promise<void>;
  redis(): Promise<void>;
  queueCounts(): Promise<Record<string, number>>;
  workerCount(): Promise<number>;
  /** ms the oldest job ready to run has been queued, 0 when none (queue-monitor.ts) */
  oldestWaitingAgeMs?(): Promise<number>;
  /** worker processes with a live heartbeat (worker-heartbeat.ts) */
  liveWorkerCount?(): Promise<number>;
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
    const [database, redis, queue, workers, oldestWaiting, heartbeats] = await Promise.all([
      probe(probes.database()),
      probe(probes.redis()),
      probe(probes.queueCounts()),
      probe(probes.workerCount()),
      probes.oldestWaitingAgeMs ? probe(probes.oldestWaitingAgeMs()) : undefined,
      probes.liveWorkerCount ? probe(probes.liveWorkerCount()) : undefined,
    ]);
    const workerCount = workers.ok ? workers.value : null;
    // A worker is alive when it keeps its heartbeat: connected to the queue is not enough (a worker
    // whose event loop is stuck stays connected). Without the heartbeat probe, the connection count.
    const workersAlive = heartbeats ? heartbeats.ok && heartbeats.value > 0 : workerCount !== null && workerCount > 0;
    // No live worker means nothing will be sent: monitoring must hear about it.
    const healthy = database.ok && redis.ok && queue.ok && workerCount !== null && workerCount > 0 && workersAlive;
    res.status(healthy ? 200 : 503).json({
      status: healthy ? 'healthy' : 'unhealthy',
      timestamp: new Date().toISOString(),
      database: database.ok ? 'ok' : `error: ${database.error}`,
      redis: redis.ok ? 'ok' : `error: ${redis.error}`,
      queue: queue.ok ? queue.value : `error: ${queue.error}`,
      workers: workerCount,
      workers_alive: workersAlive,
      // Reported, not judged: a backlog is a capacity question for the metrics, not a dead service.
      ...(oldestWaiting && { oldest_waiting_age_s: oldestWaiting.ok ? Math.round(oldestWaiting.value / 100) / 10 : `error: ${oldestWaiting.error}` }),
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
