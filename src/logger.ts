import { pino, type Logger } from 'pino';

export type { Logger };

// Keys and credentials never reach a log line, even if an object carrying them is logged by
// mistake: pino removes these paths before serialising.
const REDACTED_PATHS = [
  'apikey',
  'apiKey',
  'custom_domain',
  'customDomain',
  'credentials',
  'password',
  'authorization',
  '*.apikey',
  '*.apiKey',
  '*.custom_domain',
  '*.customDomain',
  '*.credentials',
  '*.password',
  '*.authorization',
  'req.headers.authorization',
  'req.headers.cookie',
];

export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { pid: process.pid },
      redact: { paths: REDACTED_PATHS, remove: true },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination,
  );
}

/** "+375296254070" → "+37529*****70": enough to tell messages apart in a log, not to dial. */
export function maskPhone(phone: string): string {
  if (phone.length <= 7) return '*'.repeat(phone.length);
  return phone.slice(0, 6) + '*'.repeat(phone.length - 8) + phone.slice(-2);
}
