import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError } from '../config.ts';
import { isDependencyFailure } from '../api/errors.ts';

// What the operator commands (balance, jobs, report) share: exit codes, argument parsing and the
// outer error handling. Exit codes are distinct across commands so that scripts and cron can tell
// causes apart without parsing text.

export const EXIT = {
  ok: 0,
  /** the enterprise or message does not exist (or has no WebSMS configuration) */
  notFound: 1,
  /** bad arguments or invalid configuration (environment) */
  usage: 2,
  /** WebSMS answered with an error, did not answer in time, or could not be reached */
  websms: 3,
  /** `balance --below`: a balance is under the threshold */
  belowThreshold: 4,
  /** PostgreSQL or Redis unavailable, or an unexpected error */
  unavailable: 5,
  /** `jobs retry|drop`: the message's current state does not allow the action */
  refused: 6,
} as const;

export class UsageError extends Error {
  override name = 'UsageError';
}

/** node:util parseArgs in strict mode, its errors turned into usage errors. */
export function parseCommandLine<T extends ParseArgsConfig['options']>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
}

/** A positive amount such as 5 or 12.5. */
export function parseAmount(value: string, option: string): number {
  if (!/^\d+(\.\d+)?$/.test(value)) throw new UsageError(`${option} needs a non-negative amount, e.g. 5 or 12.5 (got "${value}")`);
  return Number(value);
}

export function parsePositiveInteger(value: string, option: string, max: number): number {
  if (!/^\d{1,15}$/.test(value) || Number(value) < 1 || Number(value) > max) {
    throw new UsageError(`${option} needs a whole number from 1 to ${max} (got "${value}")`);
  }
  return Number(value);
}

/**
 * Runs a command and sets the exit code: usage and configuration errors → 2 with the usage text,
 * PostgreSQL/Redis failures and anything unexpected → 5. Messages go to stderr; no secret is in them
 * (connection URLs are not printed, WebSMS texts are scrubbed by the client).
 */
export async function runCommand(usage: string, command: () => Promise<number>): Promise<void> {
  try {
    process.exitCode = await command();
  } catch (error) {
    if (error instanceof UsageError) {
      process.stderr.write(`${error.message}\n\n${usage}\n`);
      process.exitCode = EXIT.usage;
    } else if (error instanceof ConfigError) {
      process.stderr.write(`${error.message}\n`);
      process.exitCode = EXIT.usage;
    } else {
      const text = error instanceof Error ? error.message : String(error);
      const what = isDependencyFailure(error) || /is not reachable/.test(text) ? 'PostgreSQL or Redis is unavailable' : 'unexpected error';
      process.stderr.write(`${what}: ${text}\n`);
      process.exitCode = EXIT.unavailable;
    }
  }
}
