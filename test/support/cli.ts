import type { TestEnv } from './context.ts';
import { spawnNode } from './service-processes.ts';

// Runs an operator command (`npm run balance|jobs|report`) as its own process under Node 24, against
// a test environment's database, Redis prefix and WebSMS sandbox, as an operator would.

export interface CliResult {
  code: number | string;
  stdout: string;
  stderr: string;
  /** stdout and stderr, for "never printed anywhere" checks */
  all: string;
}

export function cliEnvironment(env: TestEnv, extra: Record<string, string> = {}): Record<string, string> {
  return {
    DATABASE_URL: env.databaseUrl,
    REDIS_URL: env.config.redisUrl,
    QUEUE_PREFIX: env.config.queuePrefix,
    WEBSMS_BASE_URL: env.sandbox.url,
    WEBSMS_TIMEOUT_MS: String(env.config.websms.timeoutMs),
    SEND_ATTEMPTS: String(env.config.worker.sendAttempts),
    RETRY_BACKOFF_MS: String(env.config.worker.retryBackoffMs),
    // A command reads the service's own settings (in production, the same environment file): the
    // line's expected times depend on the limit.
    RATE_LIMIT_PER_WINDOW: String(env.config.rateLimit.perWindow),
    RATE_LIMIT_WINDOW_MS: String(env.config.rateLimit.windowMs),
    RATE_LIMIT_MARGIN_MS: String(env.config.rateLimit.marginMs),
    LOG_LEVEL: 'error',
    ...extra,
  };
}

export async function runCli(env: TestEnv, command: 'balance' | 'jobs' | 'report', args: string[], extra: Record<string, string> = {}): Promise<CliResult> {
  const child = spawnNode(['src/run.mjs', `src/cli/${command}.ts`, ...args], cliEnvironment(env, extra), command);
  // 'close' comes after the process exited and its pipes are drained.
  const closed = new Promise<void>((resolve) => child.child.once('close', () => resolve()));
  let stdout = '';
  let stderr = '';
  child.child.stdout?.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  child.child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
  // A command that hangs is a failure, not a stuck test run.
  const timer = setTimeout(() => void child.stop(1_000), 45_000);
  await closed;
  const code = await child.exited;
  clearTimeout(timer);
  return { code, stdout, stderr, all: stdout + stderr };
}
