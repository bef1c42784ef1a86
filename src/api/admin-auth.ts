import { createHash, timingSafeEqual } from 'node:crypto';
import type { RequestHandler } from 'express';
import { errorEnvelope } from '../messages/message.ts';

export interface AdminCredentials {
  user: string;
  password: string;
}

const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();

/** Constant-time comparison of two strings of any length (hashing first equalises lengths). */
export function safeEqual(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}

/**
 * HTTP Basic authentication for operator surfaces (dashboard, metrics, reports).
 * `credentials` undefined: `whenUnset` decides — 'open' lets requests through (metrics, reports:
 * as open as the old service when no credentials are configured), 'off' answers 404 (the
 * dashboard can change jobs, so it only exists behind credentials).
 */
export function requireAdmin(credentials: AdminCredentials | undefined, whenUnset: 'open' | 'off'): RequestHandler {
  return (req, res, next) => {
    if (!credentials) {
      if (whenUnset === 'open') return next();
      res.status(404).json(errorEnvelope(`Not found: ${req.method} ${req.path}`));
      return;
    }
    const header = req.get('authorization') ?? '';
    const match = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header);
    const decoded = match ? Buffer.from(match[1]!, 'base64').toString('utf8') : '';
    const separator = decoded.indexOf(':');
    const user = separator >= 0 ? decoded.slice(0, separator) : '';
    const password = separator >= 0 ? decoded.slice(separator + 1) : '';
    // Both comparisons always run: the timing says nothing about which part was wrong.
    const userOk = safeEqual(user, credentials.user);
    const passwordOk = safeEqual(password, credentials.password);
    if (match && userOk && passwordOk) return next();
    res.setHeader('WWW-Authenticate', 'Basic realm="user-sms operators", charset="UTF-8"');
    res.status(401).json(errorEnvelope('Authentication required'));
  };
}
