import type { ErrorRequestHandler, RequestHandler } from 'express';
import type { Logger } from '../logger.ts';
import { errorEnvelope } from '../messages/message.ts';

/** An answer decided by the API itself: status plus the one error envelope every failure uses. */
export class HttpError extends Error {
  readonly status: number;
  readonly extra: Record<string, unknown>;
  constructor(status: number, message: string, extra: Record<string, unknown> = {}) {
    super(message);
    this.status = status;
    this.extra = extra;
  }
}

// What body-parser reports, mapped to what the caller can do about it.
const BODY_ERRORS: Record<string, [number, string]> = {
  'entity.parse.failed': [400, 'Malformed JSON body'],
  'entity.too.large': [413, 'Request body too large'],
  'encoding.unsupported': [415, 'Unsupported content encoding'],
  'charset.unsupported': [415, 'Unsupported charset: send UTF-8 JSON'],
  'request.aborted': [400, 'Request aborted'],
  'request.size.invalid': [400, 'Request body size does not match Content-Length'],
  'stream.encoding.set': [500, 'Internal error'],
};

const UNAVAILABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EAI_AGAIN', '57P01', '57P02', '57P03', '53300']);
// `Query read timeout`: pg's own deadline (query_timeout) when PostgreSQL stops answering on an open
// connection (dropped packets, a frozen server): a dependency failure, not a bug (found by
// test/faults/postgres-outage.test.ts, which got 500 "Internal error" for it).
const UNAVAILABLE_TEXT = /Connection terminated|timeout exceeded when trying to connect|Connection is closed|Stream isn't writeable|Command timed out|connect ECONNREFUSED|Client has encountered a connection error|Reached the max retries|canceling statement due to statement timeout|Query read timeout/i;

/** PostgreSQL or Redis is down or too slow: a 503 the caller may retry, not a bug. */
export function isDependencyFailure(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === 'string' && (UNAVAILABLE_CODES.has(code) || code.startsWith('08'))) return true;
  if (error instanceof AggregateError) return error.errors.some(isDependencyFailure);
  return UNAVAILABLE_TEXT.test(error.message);
}

/** An http-errors style error (status 400–499, meant to be shown) from Express or body-parser. */
function isClientFault(error: unknown): error is Error & { status: number; code?: unknown } {
  if (!(error instanceof Error)) return false;
  const { status, expose } = error as { status?: unknown; expose?: unknown };
  return typeof status === 'number' && status >= 400 && status < 500 && (expose === true || error instanceof URIError);
}

export const notFoundHandler: RequestHandler = (req, _res, next) => {
  next(new HttpError(404, `Not found: ${req.method} ${req.path}`));
};

export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (error: unknown, req, res, next) => {
    if (res.headersSent) {
      next(error);
      return;
    }
    let status = 500;
    let message = 'Internal error';
    let extra: Record<string, unknown> = {};
    const bodyError = typeof error === 'object' && error !== null && 'type' in error ? BODY_ERRORS[String(error.type)] : undefined;
    if (error instanceof HttpError) {
      ({ status, message, extra } = error);
    } else if (bodyError) {
      [status, message] = bodyError;
    } else if (isClientFault(error)) {
      // Express and body-parser mark what the request got wrong (an undecodable %-escape in the path,
      // a body that does not match its Content-Encoding) with a 4xx status: the caller's error, not ours.
      status = error.status;
      message = /^Z_/.test(String(error.code)) ? 'Request body does not match its Content-Encoding' : `Malformed request: ${error.message}`;
    } else if (isDependencyFailure(error)) {
      status = 503;
      message = 'Service temporarily unavailable (database or queue); nothing was sent, retry later';
      logger.error({ err: describe(error), path: req.path }, 'dependency failure');
    } else {
      logger.error({ err: error, path: req.path }, 'unhandled error');
    }
    if (status === 503) res.setHeader('Retry-After', '5');
    res.status(status).json(errorEnvelope(message, extra));
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}
