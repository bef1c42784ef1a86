import { parseArgs } from 'node:util';

// `npm run bench -- [options]`. Defaults follow ../shared/guides/benchmarks.md and issue 5: 50
// clients, sandbox at 0 ms and 100 ms, enough enterprises that the real limit (3 per 60 s) never
// binds during the throughput runs, a 30-message backlog over 3 workers for the limit.

export const PHASES = ['throughput', 'overhead', 'soak', 'ratelimit', 'scale', 'lines', 'delivery'] as const;
export type Phase = (typeof PHASES)[number];

export interface BenchOptions {
  /** seconds of each closed-loop and paced load run */
  durationS: number;
  connections: number;
  /** sandbox latencies, ms; each gets a direct run, a service run and an overhead run */
  latenciesMs: number[];
  /** enterprises the throughput load cycles through, under the real limit */
  enterprises: number;
  /** worker processes of the throughput stack */
  workers: number;
  /** WORKER_CONCURRENCY of every worker process; undefined: the service's default */
  workerConcurrency: number | undefined;
  /** the load of the overhead phase's paced runs, as a fraction of the service's max throughput there */
  overheadLoadFraction: number;
  /** the loads of the delivery phase's paced runs, as fractions of its baseline's max throughput; the first is the latency target's */
  deliveryLoadFractions: number[];
  /** length of the soak run (RSS at 10 s vs at the end); 0 skips it */
  soakS: number;
  /** the limit phase: backlog for one enterprise, over `rateWorkers` worker processes */
  backlog: number;
  rateWorkers: number;
  rateLimit: number;
  rateWindowMs: number;
  rateMarginMs: number;
  /** sandbox latency during the limit and scale phases */
  rateLatencyMs: number;
  scaleEnterprises: number;
  /** the lines phase: `lines` enterprises with `lineLength` messages each, drained by `rateWorkers` workers */
  lines: number;
  lineLength: number;
  linesWindowMs: number;
  linesMarginMs: number;
  phases: Phase[];
  logLevel: string;
  /** NODE_OPTIONS for the API and worker processes (e.g. V8 heap flags) */
  nodeOptions: string | undefined;
  /** write V8 CPU profiles of the API and worker processes to <out>/profiles */
  profile: boolean;
  outDir: string;
  /** hard bound on the whole run; past it the bench cleans up and fails */
  maxSeconds: number;
  databaseUrl: string;
  redisUrl: string;
  quick: boolean;
}

const HELP = `npm run bench -- [options]

  --duration <s>            seconds per load run (default 10; quick 3)
  --connections <n>         concurrent clients (default 50)
  --latency <ms,ms>         sandbox latencies to measure (default 0,100)
  --enterprises <n>         enterprises the throughput load cycles through (default 30000)
  --workers <n>             worker processes for the throughput runs (default 2)
  --worker-concurrency <n>  WORKER_CONCURRENCY (default: the service's own default)
  --overhead-load <f>       load of the overhead phase's paced runs as a fraction of max throughput (default 0.5)
  --delivery-loads <list>   loads of the delivery phase's paced runs as fractions of its baseline's max throughput;
                            the first is the latency target's, the others are reported (default 0.25,0.5)
  --soak <s>                soak run: memory at 10 s vs at the end; 0 = skip (default 60; quick 0)
  --backlog <n>             rate-limit backlog for one enterprise (default 30)
  --rate-workers <n>        worker processes for the rate-limit phase (default 3)
  --rate-limit <n>          sends per window in the rate-limit phase (default 3)
  --rate-window-ms <ms>     shortened window for the rate-limit phase (default 3000; quick 2000)
  --rate-margin-ms <ms>     RATE_LIMIT_MARGIN_MS there (default 100)
  --rate-latency <ms>       sandbox latency in the rate-limit and scale phases (default 100)
  --scale-enterprises <n>   distinct enterprises in the scale phase (default 10000; quick 1000)
  --lines <n>               lines phase: enterprises with a long line each (default 20; quick 5)
  --line-length <n>         messages per line (default 500; quick 40)
  --lines-window-ms <ms>    window of the lines phase, 3 per window (default 1000)
  --lines-margin-ms <ms>    margin of the lines phase (default 50)
  --phases <list>           subset of ${PHASES.join(',')} (default: all)
  --log-level <level>       LOG_LEVEL of the service processes (default info, as in production)
  --node-options <flags>    NODE_OPTIONS for the API and worker processes (e.g. "--max-semi-space-size=8")
  --profile                 V8 CPU profiles of API and workers into <out>/profiles
  --out <dir>               output directory (default bench-results)
  --max-seconds <s>         abort (and clean up) after this long (default 1200)
  --quick                   smoke run: short runs, no soak, small scale phase
  -h, --help
`;

function positive(name: string, raw: string | undefined, fallback: number, allowZero = false): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) throw new Error(`--${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got "${raw}"`);
  return value;
}

function integer(name: string, raw: string | undefined, fallback: number, allowZero = false): number {
  const value = positive(name, raw, fallback, allowZero);
  if (!Number.isInteger(value)) throw new Error(`--${name} must be an integer, got "${raw}"`);
  return value;
}

export function parseOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): BenchOptions | 'help' {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      duration: { type: 'string' },
      connections: { type: 'string' },
      latency: { type: 'string' },
      enterprises: { type: 'string' },
      workers: { type: 'string' },
      'worker-concurrency': { type: 'string' },
      'overhead-load': { type: 'string' },
      'delivery-loads': { type: 'string' },
      soak: { type: 'string' },
      backlog: { type: 'string' },
      'rate-workers': { type: 'string' },
      'rate-limit': { type: 'string' },
      'rate-window-ms': { type: 'string' },
      'rate-margin-ms': { type: 'string' },
      'rate-latency': { type: 'string' },
      'scale-enterprises': { type: 'string' },
      lines: { type: 'string' },
      'line-length': { type: 'string' },
      'lines-window-ms': { type: 'string' },
      'lines-margin-ms': { type: 'string' },
      phases: { type: 'string' },
      'log-level': { type: 'string' },
      'node-options': { type: 'string' },
      profile: { type: 'boolean' },
      out: { type: 'string' },
      'max-seconds': { type: 'string' },
      quick: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) return 'help';
  const quick = values.quick ?? false;

  const latenciesMs = (values.latency ?? '0,100').split(',').map((part) => integer('latency', part.trim(), 0, true));
  const phases = values.phases === undefined ? [...PHASES] : values.phases.split(',').map((p) => p.trim());
  for (const phase of phases) {
    if (!(PHASES as readonly string[]).includes(phase)) throw new Error(`--phases: unknown phase "${phase}" (known: ${PHASES.join(', ')})`);
  }
  const rateWindowMs = integer('rate-window-ms', values['rate-window-ms'], quick ? 2_000 : 3_000);
  const overheadLoadFraction = positive('overhead-load', values['overhead-load'], 0.5);
  if (overheadLoadFraction > 1) throw new Error('--overhead-load must be at most 1');
  const deliveryLoadFractions = (values['delivery-loads'] ?? '0.25,0.5').split(',').map((part) => positive('delivery-loads', part.trim(), 0));
  if (deliveryLoadFractions.some((f) => f > 1)) throw new Error('--delivery-loads must be at most 1 each');

  return {
    durationS: positive('duration', values.duration, quick ? 3 : 10),
    connections: integer('connections', values.connections, 50),
    latenciesMs,
    enterprises: integer('enterprises', values.enterprises, quick ? 10_000 : 30_000),
    workers: integer('workers', values.workers, 2),
    workerConcurrency: values['worker-concurrency'] === undefined ? undefined : integer('worker-concurrency', values['worker-concurrency'], 1),
    overheadLoadFraction,
    deliveryLoadFractions,
    soakS: integer('soak', values.soak, quick ? 0 : 60, true),
    backlog: integer('backlog', values.backlog, 30),
    rateWorkers: integer('rate-workers', values['rate-workers'], 3),
    rateLimit: integer('rate-limit', values['rate-limit'], 3),
    rateWindowMs,
    // The margin absorbs the jitter between a grant and WebSMS's receipt of the call, which does not
    // shrink with the window: half the service's 200 ms default, so that a 3 s window can still
    // reach 96.8% of its nominal rate (a 60 s window loses 0.3% to the full 200 ms).
    rateMarginMs: integer('rate-margin-ms', values['rate-margin-ms'], 100, true),
    rateLatencyMs: integer('rate-latency', values['rate-latency'], 100, true),
    scaleEnterprises: integer('scale-enterprises', values['scale-enterprises'], quick ? 1_000 : 10_000),
    lines: integer('lines', values.lines, quick ? 5 : 20),
    lineLength: integer('line-length', values['line-length'], quick ? 40 : 500),
    linesWindowMs: integer('lines-window-ms', values['lines-window-ms'], 1_000),
    linesMarginMs: integer('lines-margin-ms', values['lines-margin-ms'], 50, true),
    phases: phases as Phase[],
    logLevel: values['log-level'] ?? 'info',
    nodeOptions: values['node-options'],
    profile: values.profile ?? false,
    outDir: values.out ?? 'bench-results',
    maxSeconds: positive('max-seconds', values['max-seconds'], 1_200),
    databaseUrl: env.DATABASE_URL || 'postgresql://postgres@127.0.0.1:5432/postgres',
    redisUrl: env.REDIS_URL || 'redis://127.0.0.1:6379',
    quick,
  };
}

export function usage(): string {
  return HELP;
}
