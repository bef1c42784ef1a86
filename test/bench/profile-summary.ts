import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

// Where a process's CPU went, from its V8 CPU profile (--profile): each sample is charged to the
// deepest frame on its stack that belongs to a known part (a library, or the service's own code), so
// a socket write lands on the client that made it and a JSON.parse on whoever called it. Start-up
// (module loading) and idle time are left out: the shares are of the busy time after start-up.
// A profile samples the time a thread spends in a function, including time it waits to be scheduled
// inside a system call on a busy machine: the shares are a guide to where the CPU goes, not a meter.

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const PARTS: Array<[string, RegExp]> = [
  ['PostgreSQL client (pg, Kysely)', /node_modules\/(pg|pg-pool|pg-protocol|pg-types|pg-connection-string|postgres-\w+|kysely)\//],
  ['Redis client (BullMQ, ioredis)', /node_modules\/(ioredis|bullmq|msgpackr|denque|cluster-key-slot|redis-errors|redis-parser|standard-as-callback)\//],
  ['HTTP client (undici)', /node_modules\/undici\//],
  ['HTTP server (Express, node:http)', /node_modules\/(express|router|body-parser|raw-body|finalhandler|send|on-finished|http-errors|iconv-lite|content-type|type-is|qs|accepts|negotiator|depd)\/|^node:_http_/],
  ['validation (zod, libphonenumber-js)', /node_modules\/(zod|libphonenumber-js)\//],
  ['logging (pino)', /node_modules\/(pino|sonic-boom|fast-redact|pino-std-serializers|thread-stream|quick-format-unescaped|on-exit-leak-free)\//],
  ['callback signing (standardwebhooks)', /node_modules\/(standardwebhooks|fast-sha256|@stablelib)\//],
  ['start-up', /^node:internal\/(modules|bootstrap|deps\/amaro)|^node:internal\/process\/pre_execution/],
];

const SERVICE_CODE = /\/(src|workers)\//;

function partOf(frame: ProfileNode['callFrame']): string | undefined {
  if (frame.functionName === '(garbage collector)') return 'garbage collection';
  for (const [name, pattern] of PARTS) if (pattern.test(frame.url)) return name;
  if (SERVICE_CODE.test(frame.url) && !frame.url.includes('node_modules')) return 'service code (src/, workers/)';
  return undefined;
}

export interface ProfileShares {
  /** busy seconds after start-up */
  busyS: number;
  /** share of busy time by part, largest first */
  parts: Array<{ part: string; share: number }>;
}

export function summariseProfile(profile: CpuProfile): ProfileShares {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const charged = new Map<number, string>();
  const chargeOf = (id: number): string => {
    const known = charged.get(id);
    if (known !== undefined) return known;
    const node = byId.get(id)!;
    if (node.callFrame.functionName === '(idle)') return '(idle)';
    let part = partOf(node.callFrame);
    if (part === undefined) {
      const up = parent.get(id);
      part = up === undefined || byId.get(up)!.callFrame.functionName === '(root)' ? 'Node and V8 internals' : chargeOf(up);
    }
    charged.set(id, part);
    return part;
  };
  const totals = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const part = chargeOf(id);
    totals.set(part, (totals.get(part) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  totals.delete('(idle)');
  totals.delete('start-up');
  const busy = [...totals.values()].reduce((a, b) => a + b, 0);
  return {
    busyS: busy / 1e6,
    parts: [...totals.entries()].map(([part, us]) => ({ part, share: busy === 0 ? 0 : us / busy })).sort((a, b) => b.share - a.share),
  };
}

/** Every profile in `dir` written by a process in `names` (pid → name), summarised. */
export function summariseProfiles(dir: string, names: ReadonlyMap<number, string>): Array<{ name: string; pid: number } & ProfileShares> {
  const summaries = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.cpuprofile'))) {
    // CPU.<date>.<time>.<pid>.<thread>.<seq>.cpuprofile
    const pid = Number(file.split('.')[3]);
    const name = names.get(pid);
    if (name === undefined) continue;
    summaries.push({ name, pid, ...summariseProfile(JSON.parse(readFileSync(join(dir, file), 'utf8')) as CpuProfile) });
  }
  return summaries.sort((a, b) => a.name.localeCompare(b.name));
}

export function describeShares(summary: ProfileShares, top = 10): string {
  return summary.parts
    .slice(0, top)
    .map((p) => `${(p.share * 100).toFixed(1)}% ${p.part}`)
    .join(', ');
}
