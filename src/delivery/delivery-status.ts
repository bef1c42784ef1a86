import type { DeliveryStatus } from '../db/database.ts';

// WebSMS's message status codes (websms-api.md, Status) and what they mean for delivery. Kept as a
// table beside the provider's words, as the error codes are (websms/error-codes.ts).
//
// Glossary
// - check: one status/sms look-up of one message.
// - schedule: the delays after the send at which a message is checked (DELIVERY_POLL_SCHEDULE_MS);
//   check k is due at sent_at + schedule[k]. A message still not final after the last one is `unknown`.

export const WEBSMS_STATUS_CODES: Readonly<Record<number, { name: string; delivery: DeliveryStatus }>> = {
  0: { name: 'queued', delivery: 'pending' },
  1: { name: 'accepted by operator', delivery: 'pending' },
  2: { name: 'rejected', delivery: 'undelivered' },
  3: { name: 'delivered', delivery: 'delivered' },
  4: { name: 'not delivered', delivery: 'undelivered' },
  5: { name: 'being delivered', delivery: 'pending' },
};

/** A code WebSMS has not documented is not final: asking again later costs a look-up, guessing could lie. */
export function deliveryStatusOf(code: number): DeliveryStatus {
  return WEBSMS_STATUS_CODES[code]?.delivery ?? 'pending';
}

export type FinalDeliveryStatus = Exclude<DeliveryStatus, 'pending'>;

export function isFinalDelivery(status: DeliveryStatus): status is FinalDeliveryStatus {
  return status !== 'pending';
}

/** `60000,300000,…` → ascending delays in ms; throws naming what is wrong. */
export function parseSchedule(value: string): number[] {
  const parts = value.split(',').map((part) => part.trim());
  if (parts.length === 0 || parts.some((part) => !/^\d{1,10}$/.test(part))) throw new Error('must be a comma-separated list of delays in ms, e.g. 60000,300000');
  const delays = parts.map(Number);
  if (delays.some((delay, i) => i > 0 && delay <= delays[i - 1]!)) throw new Error('delays must grow: each later than the one before');
  if (delays.length > 50) throw new Error('at most 50 checks per message');
  return delays;
}
