import type { RedisClient } from '../redis-connection.ts';

// The last WebSMS balance of each enterprise, as the balance watch (refresh-balances.ts) and
// `GET /enterprises/{n}/balance?fresh=true` found it. Redis holds numbers and timestamps under the
// enterprise number, nothing else: no API key, no WebSMS login, no error text (those stay in
// PostgreSQL and the logs). One hash for every enterprise, so that a scrape reads it with one
// HGETALL (no SCAN, which Redis Cluster runs on one node only); its key carries the queue's prefix,
// hence its hash tag and Cluster slot.
//
// Fields: `${enterprise}:sms`, `${enterprise}:viber` (BYN), `${enterprise}:refreshed_at` (ms of the
// last successful read), `${enterprise}:failed_at` (ms of the last failed read, removed by a success).

export interface CachedBalance {
  enterpriseNumber: string;
  /** undefined until a read succeeded */
  sms?: number;
  viber?: number;
  /** ms since the epoch of the last successful read; undefined: never */
  refreshedAtMs?: number;
  /** ms since the epoch of the last failed read, if it failed after the last success */
  failedAtMs?: number;
}

export interface BalanceCache {
  /** A successful read. */
  recordBalance(enterpriseNumber: string, balance: { sms: number; viber: number }, atMs: number): Promise<void>;
  /** A successful read of an account, for each of its enterprises. */
  recordBalances(enterpriseNumbers: readonly string[], balance: { sms: number; viber: number }, atMs: number): Promise<void>;
  /** A failed read: the last good balance stays, and ages. */
  recordFailure(enterpriseNumber: string, atMs: number): Promise<void>;
  /** A failed read of an account, for each of its enterprises. */
  recordFailures(enterpriseNumbers: readonly string[], atMs: number): Promise<void>;
  get(enterpriseNumber: string): Promise<CachedBalance | undefined>;
  all(): Promise<CachedBalance[]>;
  /** Forgets every enterprise not in `keep` (no longer active or configured): their gauges disappear. */
  retainOnly(keep: ReadonlySet<string>): Promise<void>;
  /** When the watch last finished a round (ms), and how many enterprises it read and failed. */
  recordRound(round: { endedAtMs: number; checked: number; failed: number }): Promise<void>;
  lastRound(): Promise<{ endedAtMs: number; checked: number; failed: number } | undefined>;
}

const FIELDS = ['sms', 'viber', 'refreshed_at', 'failed_at'] as const;
type Field = (typeof FIELDS)[number];
/** Enterprises written per command: one account's thousands of enterprises never make one huge command. */
const ENTERPRISES_PER_COMMAND = 500;

export function balanceCacheKeys(prefix: string) {
  return { balances: `${prefix}:balances`, round: `${prefix}:balances:round` };
}

/** `0367:refreshed_at` → ['0367', 'refreshed_at']; an enterprise number may itself hold ':'. */
function splitField(field: string): [string, Field] | undefined {
  const separator = field.lastIndexOf(':');
  const name = field.slice(separator + 1) as Field;
  return separator > 0 && FIELDS.includes(name) ? [field.slice(0, separator), name] : undefined;
}

function finite(value: string | undefined | null): number | undefined {
  if (value === undefined || value === null) return undefined;
  const number = Number(value);
  return Number.isFinite(number) ? number : undefined;
}

export function createBalanceCache(redis: RedisClient, prefix: string): BalanceCache {
  const keys = balanceCacheKeys(prefix);
  const field = (enterprise: string, name: Field) => `${enterprise}:${name}`;
  const exec = async (transaction: ReturnType<RedisClient['multi']>): Promise<void> => {
    const results = await transaction.exec();
    if (!results) throw new Error('balance cache transaction was aborted');
    for (const [error] of results) if (error) throw error;
  };

  const chunks = (numbers: readonly string[]) =>
    Array.from({ length: Math.ceil(numbers.length / ENTERPRISES_PER_COMMAND) }, (_, i) => numbers.slice(i * ENTERPRISES_PER_COMMAND, (i + 1) * ENTERPRISES_PER_COMMAND));

  const cache: BalanceCache = {
    async recordBalance(enterprise, balance, atMs) {
      await cache.recordBalances([enterprise], balance, atMs);
    },
    async recordBalances(enterprises, balance, atMs) {
      for (const chunk of chunks(enterprises)) {
        const values = chunk.flatMap((e) => [field(e, 'sms'), String(balance.sms), field(e, 'viber'), String(balance.viber), field(e, 'refreshed_at'), String(atMs)]);
        await exec(
          redis
            .multi()
            .hset(keys.balances, ...values)
            .hdel(keys.balances, ...chunk.map((e) => field(e, 'failed_at'))),
        );
      }
    },
    async recordFailure(enterprise, atMs) {
      await cache.recordFailures([enterprise], atMs);
    },
    async recordFailures(enterprises, atMs) {
      for (const chunk of chunks(enterprises)) await redis.hset(keys.balances, ...chunk.flatMap((e) => [field(e, 'failed_at'), String(atMs)]));
    },
    async get(enterprise) {
      const [sms, viber, refreshedAt, failedAt] = await redis.hmget(keys.balances, ...FIELDS.map((name) => field(enterprise, name)));
      if (refreshedAt === null && failedAt === null) return undefined;
      return entry(enterprise, { sms, viber, refreshed_at: refreshedAt, failed_at: failedAt });
    },
    async all() {
      const fields = await redis.hgetall(keys.balances);
      const byEnterprise = new Map<string, Partial<Record<Field, string>>>();
      for (const [name, value] of Object.entries(fields)) {
        const parts = splitField(name);
        if (!parts) continue;
        const values = byEnterprise.get(parts[0]) ?? {};
        values[parts[1]] = value;
        byEnterprise.set(parts[0], values);
      }
      return [...byEnterprise].sort(([a], [b]) => a.localeCompare(b)).map(([enterprise, values]) => entry(enterprise, values));
    },
    async retainOnly(keep) {
      const stale = (await redis.hkeys(keys.balances)).filter((name) => {
        const parts = splitField(name);
        return !parts || !keep.has(parts[0]);
      });
      if (stale.length > 0) await redis.hdel(keys.balances, ...stale);
    },
    async recordRound(round) {
      await redis.hset(keys.round, 'ended_at', String(round.endedAtMs), 'checked', String(round.checked), 'failed', String(round.failed));
    },
    async lastRound() {
      const [endedAt, checked, failed] = await redis.hmget(keys.round, 'ended_at', 'checked', 'failed');
      const endedAtMs = finite(endedAt);
      return endedAtMs === undefined ? undefined : { endedAtMs, checked: finite(checked) ?? 0, failed: finite(failed) ?? 0 };
    },
  };
  return cache;
}

function entry(enterpriseNumber: string, values: Partial<Record<Field, string | null>>): CachedBalance {
  const refreshedAtMs = finite(values.refreshed_at);
  const failedAtMs = finite(values.failed_at);
  return {
    enterpriseNumber,
    ...(refreshedAtMs !== undefined && { sms: finite(values.sms) ?? 0, viber: finite(values.viber) ?? 0, refreshedAtMs }),
    ...(failedAtMs !== undefined && { failedAtMs }),
  };
}
