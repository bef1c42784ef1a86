import type { RedisClient } from '../redis-connection.ts';
import type { BalanceCache, CachedBalance } from '../balance-watch/balance-cache.ts';
import type { Config } from '../config.ts';
import type { Db } from '../db/database.ts';
import type { MetricFamily } from './exposition.ts';
import type { MetricSource } from './queue-monitor.ts';
import { countWaitingMessagesByEnterprise } from './waiting-messages.ts';

// Families the API's /metrics adds beside the workers' counters and the queue (queue-monitor.ts):
// what /health sees of PostgreSQL and Redis, every enterprise's backlog, and the balance watch's
// cache. Names are what ops/prometheus/alerts.yml and ops/grafana/user-sms.json query.

export function dependencyFamily(up: { postgresql: boolean; redis: boolean }): MetricFamily {
  return {
    name: 'user_sms_dependency_up',
    help: 'Whether the API reached the dependency at this scrape, with the checks /health makes (1) or not (0).',
    type: 'gauge',
    samples: [
      { labels: { dependency: 'postgresql' }, value: up.postgresql ? 1 : 0 },
      { labels: { dependency: 'redis' }, value: up.redis ? 1 : 0 },
    ],
  };
}

export function backlogFamilies(waiting: ReadonlyArray<{ enterprise: string; waiting: number }>, sendsPerHour: number): MetricFamily[] {
  return [
    {
      name: 'user_sms_enterprise_waiting_messages',
      help: 'Messages of the enterprise accepted and not yet sent (its line, and any waiting for a retry); enterprises with none are left out.',
      type: 'gauge',
      samples: waiting.map((w) => ({ labels: { enterprise: w.enterprise }, value: w.waiting })),
    },
    {
      name: 'user_sms_enterprise_max_sends_per_hour',
      help: "The most SMS one enterprise's line can send in an hour (RATE_LIMIT_PER_WINDOW per RATE_LIMIT_WINDOW_MS + RATE_LIMIT_MARGIN_MS).",
      type: 'gauge',
      samples: [{ value: sendsPerHour }],
    },
  ];
}

export function balanceFamilies(balances: readonly CachedBalance[], lastRound: { endedAtMs: number } | undefined, refreshS: number): MetricFamily[] {
  const read = balances.filter((b): b is CachedBalance & Required<Pick<CachedBalance, 'sms' | 'viber' | 'refreshedAtMs'>> => b.refreshedAtMs !== undefined);
  return [
    {
      name: 'user_sms_websms_balance_byn',
      help: "Each enterprise's WebSMS balance (BYN) at its last successful refresh, by account: sms, viber.",
      type: 'gauge',
      samples: read.flatMap((b) => [
        { labels: { enterprise: b.enterpriseNumber, account: 'sms' }, value: b.sms },
        { labels: { enterprise: b.enterpriseNumber, account: 'viber' }, value: b.viber },
      ]),
    },
    {
      name: 'user_sms_websms_balance_refreshed_timestamp_seconds',
      help: "When each enterprise's balance was last read from WebSMS successfully (Unix time; 0: never, e.g. wrong credentials).",
      type: 'gauge',
      samples: balances.map((b) => ({ labels: { enterprise: b.enterpriseNumber }, value: (b.refreshedAtMs ?? 0) / 1_000 })),
    },
    {
      name: 'user_sms_balance_watch_last_round_timestamp_seconds',
      help: 'When the balance watch last finished a round over every enterprise (Unix time; 0: not yet).',
      type: 'gauge',
      samples: [{ value: (lastRound?.endedAtMs ?? 0) / 1_000 }],
    },
    {
      name: 'user_sms_balance_refresh_interval_seconds',
      help: 'How often the balance watch reads every balance (BALANCE_REFRESH_S).',
      type: 'gauge',
      samples: [{ value: refreshS }],
    },
  ];
}

export interface ServiceMetricPorts {
  config: { balanceRefreshS: number; rateLimit: Config['rateLimit'] };
  db: Db;
  redis: RedisClient;
}

/** The same budget /health gives each check. */
const PROBE_TIMEOUT_MS = 2_000;

async function reaches(check: () => Promise<unknown>): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([check(), new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), PROBE_TIMEOUT_MS)))]);
    return true;
  } catch {
    return false;
  } finally {
    clearTimeout(timer);
  }
}

/** An enterprise's line sends `perWindow` per window + margin (src/line): its most per hour. */
export function maxSendsPerHour(rateLimit: Config['rateLimit']): number {
  return Math.floor((rateLimit.perWindow * 3_600_000) / (rateLimit.windowMs + rateLimit.marginMs));
}

/** The API's own sources for /metrics, beside the workers' counters and the queue. */
export function serviceMetricSources(ports: ServiceMetricPorts, balances: BalanceCache): MetricSource[] {
  return [
    {
      name: 'dependencies',
      read: async () => {
        // The checks /health makes: a trivial statement, and PING.
        const [postgresql, redis] = await Promise.all([
          reaches(() => ports.db.selectNoFrom((eb) => eb.lit(1).as('one')).execute()),
          reaches(() => ports.redis.ping()),
        ]);
        return [dependencyFamily({ postgresql, redis })];
      },
    },
    { name: 'backlog', read: async () => backlogFamilies(await countWaitingMessagesByEnterprise(ports.db), maxSendsPerHour(ports.config.rateLimit)) },
    {
      name: 'balances',
      read: async () => {
        const [all, round] = await Promise.all([balances.all(), balances.lastRound()]);
        return balanceFamilies(all, round, ports.config.balanceRefreshS);
      },
    },
  ];
}
