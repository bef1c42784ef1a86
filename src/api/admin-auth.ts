import { createHash, timingSafeEqual } from 'node:crypto';

/** ADMIN_USER/ADMIN_PASSWORD: the operator's HTTP Basic credentials (access.ts checks them). */
export interface AdminCredentials {
  user: string;
  password: string;
}

const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();

/** Constant-time comparison of two strings of any length (hashing first equalises lengths). */
export function safeEqual(a: string, b: string): boolean {
  return timingSafeEqual(digest(a), digest(b));
}
