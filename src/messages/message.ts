import type { DeliveryStatus, MessageStatus } from '../db/database.ts';

export type { MessageStatus };

/** States a message never leaves. `unknown`: WebSMS may have it, and it could not be checked. */
export const FINAL_STATUSES: readonly MessageStatus[] = ['success', 'failed', 'unknown'];

export function isFinal(status: MessageStatus): boolean {
  return FINAL_STATUSES.includes(status);
}

export interface MessageRecord {
  id: number;
  enterpriseNumber: string;
  enterpriseName: string | null;
  phone: string;
  sender: string | null;
  customId: string | null;
  status: MessageStatus;
  websmsMessageId: number | null;
  price: number | null;
  parts: number | null;
  amount: number | null;
  error: string | null;
  errorCode: string | null;
  attempts: number;
  serviceName: string | null;
  createdAt: Date | null;
  sentAt: Date | null;
  updatedAt: Date;
  notBefore: Date | null;
  /** resent because WebSMS's lookup said the first attempt never arrived: a possible duplicate */
  resentAfterUnknown: boolean;
  /** SHA-256 of the keys its status_url links carry (status-key.ts) */
  statusKeyHashes: Buffer[];
  /** whether it reached the phone (src/delivery/); null: never sent, or sent before delivery was asked */
  deliveryStatus: DeliveryStatus | null;
  /** when the final delivery status was learned */
  deliveredAt: Date | null;
}

/** What a finished delivery reports back through the queue: no phone, text or key. */
export interface DeliveryOutcome {
  status: MessageStatus;
  websmsMessageId: number | null;
  price: number | null;
  parts: number | null;
  amount: number | null;
  error: string | null;
}

/**
 * The answer of `POST /send`. The first seven fields are the old service's contract and are never
 * removed or renamed; `id`, `status` and the links are additions.
 */
export interface SendEnvelope {
  success: boolean;
  message_id: number | null;
  price: number | null;
  parts: number | null;
  amount: number | null;
  custom_id: string | null;
  error: string | null;
  /** Old FastAPI clients read `detail` on errors: same text as `error`. */
  detail?: string;
  id?: number;
  status?: MessageStatus | 'queued';
  expected_send_at?: string;
  status_url?: string;
}

export function errorEnvelope(error: string, extra: Partial<SendEnvelope> = {}): SendEnvelope {
  return {
    success: false,
    message_id: null,
    price: null,
    parts: null,
    amount: null,
    custom_id: null,
    error,
    detail: error,
    ...extra,
  };
}

/** `statusUrl`: the message's capability link, when the caller is to be given one (accept.ts). */
export function outcomeEnvelope(id: number, customId: string | null, outcome: DeliveryOutcome, statusUrl?: string): SendEnvelope {
  const link = statusUrl === undefined ? {} : { status_url: statusUrl };
  if (outcome.status === 'success') {
    return {
      success: true,
      message_id: outcome.websmsMessageId,
      price: outcome.price,
      parts: outcome.parts,
      amount: outcome.amount,
      custom_id: customId,
      error: null,
      id,
      status: 'success',
      ...link,
    };
  }
  return errorEnvelope(outcome.error ?? `Message ${id} ended with status ${outcome.status}`, {
    custom_id: customId,
    id,
    status: outcome.status,
    ...link,
  });
}

export function recordOutcome(record: MessageRecord): DeliveryOutcome {
  return {
    status: record.status,
    websmsMessageId: record.websmsMessageId,
    price: record.price,
    parts: record.parts,
    amount: record.amount,
    error: record.error,
  };
}

/** 202: accepted and still on its way; it will be sent, and `status_url` tells when it was. */
export function queuedEnvelope(record: MessageRecord, expectedSendAt: Date, statusUrl: string): SendEnvelope {
  return acceptedEnvelope(record.id, record.customId, expectedSendAt, statusUrl, record.status === 'sending' ? 'sending' : 'queued');
}

/** 202 as of acceptance, built without reading the row back. */
export function acceptedEnvelope(id: number, customId: string | null, expectedSendAt: Date, statusUrl: string, status: 'queued' | 'sending' = 'queued'): SendEnvelope {
  return {
    success: false,
    message_id: null,
    price: null,
    parts: null,
    amount: null,
    custom_id: customId,
    error: null,
    id,
    status,
    expected_send_at: expectedSendAt.toISOString(),
    status_url: statusUrl,
  };
}
