// An enterprise's line (design decision 5): its waiting messages, sent one at a time in acceptance
// order, each within the rolling-window limit. One Lua script (enterprise-line.lua) holds every rule,
// so all worker processes on all machines share one line, one count and one clock (Redis's).
//
// Glossary
// - line: the enterprise's messages waiting for their turn, ordered by message id (= acceptance order).
//   A message leaves the line when it takes its grant; if its send must be retried, it joins again by
//   its id, so it goes after whatever was sent meanwhile and before the rest.
// - head: the first message of the line; only the head may take a grant.
// - turn: the one send of an enterprise in flight. While a call to WebSMS is out, the next head waits:
//   WebSMS receives an enterprise's messages in the order they were sent.
// - grant: permission for one send attempt. It counts in the rolling window from its slot + margin, and
//   never from before its call ended: WebSMS received the request at some moment before the call
//   ended, so the window holds as WebSMS sees it, whatever the latency.
// - slot: when a message may take its grant. Computed from the window's grants and the message's
//   position, never booked: a cancel or a send that ends early moves everyone behind it forward.
// - wake: whoever ends a turn (or takes a message out of the line) tells the next head's job to run at
//   its slot, so each waiting job runs about once, at its own slot, instead of all of them at every slot.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Cluster, type ChainableCommander } from 'ioredis';
import type { RedisClient } from '../redis-connection.ts';

export interface EnterpriseLineOptions {
  /** Keys are `${keyPrefix}:line:${enterprise}` etc.: the queue prefix, whose hash tag keeps them in one Cluster slot. */
  keyPrefix: string;
  /** Grants per window, per enterprise. */
  limit: number;
  windowMs: number;
  /**
   * Added to the window, counted from each send's slot: rounds of sends are window + margin apart, so
   * expected send times do not drift while a send (slot to end of call) takes less than the margin. A
   * send that takes longer counts from the end of its call instead, so the window holds as WebSMS sees
   * it whatever the latency.
   */
  marginMs?: number;
  /**
   * How long a turn is held when its holder never ends it (a worker killed mid-send); then the line
   * moves on. Longer than the WebSMS call budget, so a live call always ends its own turn.
   */
  turnTtlMs: number;
  /**
   * Replicas that must hold a grant before it is used (Redis WAIT on the connection that recorded it),
   * and how long to wait for them. Replication is asynchronous: a grant only the master had dies with
   * it in a failover, and the enterprise could then be granted that send again within the window. 0:
   * grants are used at once (a single Redis, or a set-up that accepts the risk).
   */
  grantReplication?: { replicas: number; waitMs: number };
}

/** Where a message stands in its line. `etaMs`: expected arrival at WebSMS, ms on Redis's clock. */
export interface LinePlace {
  position: number;
  etaMs: number;
  /** ms until its slot (may be ≤ 0: now) */
  slotInMs: number;
}

export interface JoinResult extends LinePlace {
  /** true: it is the head with nothing in flight, so its own job must wake at its slot; false: the send before it wakes it */
  wakesItself: boolean;
}

/** A head to wake: its message id and the ms until its slot. */
export interface Wake {
  messageId: number;
  inMs: number;
}

export type TakeResult =
  /** `replicated` false: the grant is recorded but no replica acknowledged it in time; send nothing on it yet */
  | { kind: 'granted'; grantedAt: number; replicated: boolean }
  /** the head, waiting for the window: its own job must wake at its slot */
  | ({ kind: 'wait' } & LinePlace)
  /** another send of the enterprise is in flight; its end wakes the next head */
  | ({ kind: 'busy' } & LinePlace)
  /** not the head; `headOverdueMs` > 0: the head has been free to go that long without going; null: nobody is known to have told it to go */
  | ({ kind: 'behind'; head: number; headOverdueMs: number | null } & LinePlace)
  /** not in the line (a retry, or Redis lost the line): rejoin, or rebuild the line from the rows */
  | { kind: 'absent' };

export type Standing = { kind: 'waiting'; position: number; etaMs: number } | { kind: 'sending' } | { kind: 'absent' };

export interface EnterpriseLine {
  /** Puts a message in its enterprise's line (idempotent) and says where it stands. */
  join(enterprise: string, messageId: number): Promise<JoinResult>;
  /** The message's turn to send, if it is the head and the window allows: records the grant. Redis errors propagate: no Redis, no send. */
  take(enterprise: string, messageId: number, token: string): Promise<TakeResult>;
  /** The message's call to WebSMS ended (whatever its outcome): ends its turn, returns the head to wake. */
  finish(enterprise: string, messageId: number): Promise<Wake | undefined>;
  /** Takes a message out of its line without a send (cancelled, dropped, finished elsewhere); returns the head to wake. */
  leave(enterprise: string, messageId: number): Promise<Wake | undefined>;
  /** Where the message stands now, without changing anything. */
  standing(enterprise: string, messageId: number): Promise<Standing>;
  /** Puts messages back in the line by id (the line was lost; the rows say who waits); returns the head to wake. */
  rebuild(enterprise: string, messageIds: readonly number[]): Promise<Wake | undefined>;
  /** The head to wake if nothing of the enterprise is in flight. */
  headToWake(enterprise: string): Promise<Wake | undefined>;
}

const script = readFileSync(new URL('./enterprise-line.lua', import.meta.url), 'utf8');
const scriptSha = createHash('sha1').update(script).digest('hex');
/** Lua's unpack and Redis's argument lists both have limits: rebuild in batches. */
const REBUILD_BATCH = 1_000;

export function createEnterpriseLine(redis: RedisClient, options: EnterpriseLineOptions): EnterpriseLine {
  const { keyPrefix, limit, windowMs, marginMs = 0, turnTtlMs, grantReplication = { replicas: 0, waitMs: 0 } } = options;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`limit must be a positive integer, got ${limit}`);
  if (!Number.isSafeInteger(windowMs) || windowMs < 1) throw new RangeError(`windowMs must be a positive integer, got ${windowMs}`);
  if (!Number.isSafeInteger(marginMs) || marginMs < 0) throw new RangeError(`marginMs must be a non-negative integer, got ${marginMs}`);
  if (!Number.isSafeInteger(turnTtlMs) || turnTtlMs < 1) throw new RangeError(`turnTtlMs must be a positive integer, got ${turnTtlMs}`);
  const keysFor = (enterprise: string) => [
    `${keyPrefix}:line:${enterprise}`,
    `${keyPrefix}:rate:${enterprise}`,
    `${keyPrefix}:turn:${enterprise}`,
    `${keyPrefix}:linemeta:${enterprise}`,
  ];

  // EVALSHA first; a Redis that has not seen the script (new server, restart, SCRIPT FLUSH) answers
  // NOSCRIPT, and EVAL runs and caches it.
  async function run(operation: string, enterprise: string, messageId: number | string, ...extra: Array<string | number>): Promise<unknown[]> {
    const args = [...keysFor(enterprise), operation, limit, windowMs, marginMs, turnTtlMs, String(messageId), ...extra];
    let reply: unknown;
    try {
      reply = await redis.evalsha(scriptSha, 4, ...args);
    } catch (error) {
      if (!(error instanceof Error && error.message.startsWith('NOSCRIPT'))) throw error;
      reply = await redis.eval(script, 4, ...args);
    }
    if (!Array.isArray(reply)) throw new Error(`enterprise line: unexpected reply from Redis to ${operation}: ${JSON.stringify(reply)}`);
    return reply as unknown[];
  }

  // WAIT covers every write the connection made before it, the grant included. A master with fewer
  // replicas connected than asked for (one lost in a failover and not yet back) needs only those it
  // has: with no replica there is nobody a failover could promote with the grant missing, and waiting
  // for one that is not there would stop every send. In a Cluster a keyless command goes to any node:
  // a pipeline led by a command on the grant's key takes it to the node (and the connection) that
  // recorded the grant.
  async function replicated(rateKey: string): Promise<boolean> {
    const { replicas, waitMs } = grantReplication;
    if (replicas === 0) return true;
    const acknowledged = Number(await onGrantNode(rateKey, (c) => c.wait(replicas, waitMs)));
    if (acknowledged >= replicas) return true;
    const role = await onGrantNode(rateKey, (c) => c.role());
    const connected = Array.isArray(role) && Array.isArray(role[2]) ? role[2].length : 0;
    return acknowledged >= Math.min(replicas, connected);
  }

  async function onGrantNode(key: string, command: (c: ChainableCommander | RedisClient) => unknown): Promise<unknown> {
    if (!(redis instanceof Cluster)) return command(redis);
    const pipeline = redis.pipeline().exists(key);
    command(pipeline);
    const [error, value] = ((await pipeline.exec()) ?? [])[1] ?? [new Error('no reply'), undefined];
    if (error) throw error;
    return value;
  }

  const num = (value: unknown, what: string): number => {
    const n = typeof value === 'number' ? value : Number(value);
    if (!Number.isFinite(n)) throw new Error(`enterprise line: ${what} is not a number: ${JSON.stringify(value)}`);
    return n;
  };
  const place = (reply: unknown[], from: number): LinePlace => ({
    position: num(reply[from], 'position'),
    etaMs: num(reply[from + 1], 'eta'),
    slotInMs: num(reply[from + 2], 'slot'),
  });
  const wake = (reply: unknown[]): Wake | undefined => (reply.length === 0 ? undefined : { messageId: num(reply[0], 'head'), inMs: num(reply[1], 'delay') });

  return {
    async join(enterprise, messageId) {
      const reply = await run('join', enterprise, messageId);
      return { ...place(reply, 0), wakesItself: reply[3] === 1 };
    },
    async take(enterprise, messageId, token) {
      const reply = await run('take', enterprise, messageId, token);
      switch (reply[0]) {
        case 'granted':
          return { kind: 'granted', grantedAt: num(reply[1], 'grant time'), replicated: await replicated(keysFor(enterprise)[1]!) };
        case 'wait':
          return { kind: 'wait', ...place(reply, 1) };
        case 'busy':
          return { kind: 'busy', ...place(reply, 1) };
        case 'behind':
          return { kind: 'behind', ...place(reply, 1), head: num(reply[4], 'head'), headOverdueMs: reply[5] === -1 ? null : num(reply[5], 'overdue') };
        case 'absent':
          return { kind: 'absent' };
        default:
          throw new Error(`enterprise line: unexpected take reply ${JSON.stringify(reply)}`);
      }
    },
    async finish(enterprise, messageId) {
      return wake(await run('finish', enterprise, messageId));
    },
    async leave(enterprise, messageId) {
      return wake(await run('leave', enterprise, messageId));
    },
    async standing(enterprise, messageId) {
      const reply = await run('standing', enterprise, messageId);
      if (reply[0] === 'waiting') return { kind: 'waiting', position: num(reply[1], 'position'), etaMs: num(reply[2], 'eta') };
      return reply[0] === 'sending' ? { kind: 'sending' } : { kind: 'absent' };
    },
    async rebuild(enterprise, messageIds) {
      let last: Wake | undefined;
      for (let start = 0; start < messageIds.length || start === 0; start += REBUILD_BATCH) {
        last = wake(await run('rebuild', enterprise, 0, ...messageIds.slice(start, start + REBUILD_BATCH).map(String)));
      }
      return last;
    },
    async headToWake(enterprise) {
      return wake(await run('head', enterprise, 0));
    },
  };
}
