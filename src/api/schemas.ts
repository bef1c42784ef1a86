import { z } from 'zod';
// The 'min' metadata, the smallest bundle: isPossible() checks only the length, and 'min' holds the
// same possible lengths as 'max' for every region. What 'max' adds are the per-type digit patterns,
// the allocation tables that isValid() reads, which refused Belarusian mobile numbers the old service
// sent because their ranges were not listed. ('mobile' is larger and, with only mobile patterns,
// judges some numbers of calling codes shared by several regions by another region's lengths: it
// refuses Canada's +1 310 xxxx.)
import { parsePhoneNumberFromString } from 'libphonenumber-js/min';
import { callbackUrlProblem } from '../callbacks/callback-hosts.ts';

// Request and response schemas: they validate requests and generate the OpenAPI document.

// C0 controls other than tab, newline and carriage return, and DEL: they have no place in an SMS,
// and NUL cannot even be stored in PostgreSQL text.
const CONTROL_CHARACTERS = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F]/;
const PRINTABLE_LINE = /^[^\u0000-\u001F\u007F]+$/;

const characters = (value: string) => [...value].length;

/** Unicode text without lone surrogates (not representable in UTF-8) or control characters. */
const cleanText = (max: number) =>
  z
    .string()
    .refine((v) => v.isWellFormed(), 'must be valid Unicode text')
    .refine((v) => !CONTROL_CHARACTERS.test(v), 'must not contain control characters')
    .refine((v) => characters(v) >= 1, 'must not be empty')
    .refine((v) => characters(v) <= max, `must be at most ${max} characters`);

const singleLine = (max: number) =>
  z
    .string()
    .refine((v) => v.isWellFormed(), 'must be valid Unicode text')
    .refine((v) => v.length === 0 || PRINTABLE_LINE.test(v), 'must not contain control characters')
    .refine((v) => v.trim().length >= 1, 'must not be empty')
    .refine((v) => characters(v) <= max, `must be at most ${max} characters`);

export const sendRequestSchema = z
  .object({
    enterprise_number: singleLine(10).meta({ description: 'The sender enterprise (enterprises.number)', example: '0367' }),
    phone: z.string().max(64, 'must be at most 64 characters').meta({
      description:
        'Recipient in international format with +, stored in E.164. Refused (400) only when it cannot be a number: unknown country code or impossible length; whether the range is assigned is for WebSMS to say (its error 100).',
      example: '+375296254070',
    }),
    text: cleanText(1000).meta({ description: 'Message text, 1–1000 characters', example: 'Ваш заказ готов' }),
    // Old clients send null for "not given".
    sender: singleLine(11)
      .refine((v) => /^[\x20-\x7E]+$/.test(v), 'must be Latin letters, digits or punctuation')
      .nullish()
      .meta({ description: 'Approved sender name, default Vochi-CRM', example: 'MyCompany' }),
    custom_id: singleLine(20).nullish().meta({ description: "The caller's own reference", example: 'order_98765' }),
    callback_url: z
      .string()
      .superRefine((value, context) => {
        const problem = callbackUrlProblem(value);
        if (problem) context.addIssue({ code: 'custom', message: problem });
      })
      .nullish()
      .meta({
        description:
          'Where to POST signed events about this message (message.sent, message.failed, message.unknown, message.delivered, message.undelivered): an absolute http or https URL of at most 2048 characters whose host is in CALLBACK_ALLOWED_HOSTS',
        example: 'https://crm.internal/sms-events',
      }),
  });

export type SendRequestBody = z.infer<typeof sendRequestSchema>;

/**
 * The phone rule on its own: its failure is a 400, as the old service answered. It refuses only what
 * cannot be a phone number: not '+' and digits, an unknown country code, or a length the country's
 * numbering plan does not have. Whether a range is assigned is not ours to say: the allocation tables
 * lag behind the operators, and the old service left that to WebSMS, whose error 100 ends as a failed
 * row and a 200 with success:false.
 */
export function normalisePhone(phone: string): string | null {
  // Only a number as people write one: '+', digits and the usual separators. libphonenumber would
  // otherwise find a number inside "+375296254070abc" or drop an extension silently.
  if (!/^\s*\+[\d\s().\-\u00A0]+$/.test(phone)) return null;
  // undefined for an unknown country code or more digits than any plan has.
  const parsed = parsePhoneNumberFromString(phone.trim());
  return parsed?.isPossible() ? parsed.number : null;
}

export const PHONE_ERROR = 'Invalid phone number: use the international format with +, e.g. +375296254070';

const nullableNumber = z.number().nullable();

export const sendEnvelopeSchema = z
  .object({
    success: z.boolean(),
    message_id: nullableNumber.meta({ description: 'WebSMS message id' }),
    price: nullableNumber.meta({ description: 'Price per part, BYN' }),
    parts: nullableNumber,
    amount: nullableNumber.meta({ description: 'Total price, BYN' }),
    custom_id: z.string().nullable(),
    error: z.string().nullable(),
    detail: z.string().optional().meta({ description: 'Same as error (for FastAPI-era clients)' }),
    id: z.number().optional().meta({ description: 'Our message id' }),
    status: z.string().optional(),
    expected_send_at: z.string().optional().meta({ description: '202 only: when the message is expected to go out' }),
    status_url: z.string().optional().meta({ description: "The message's own link (GET or DELETE; its key is the caller's alone), relative to the API's base" }),
    errors: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
  });

export const messageSchema = z
  .object({
    id: z.number(),
    enterprise_number: z.string(),
    enterprise_name: z.string().nullable(),
    phone: z.string().meta({ description: 'Masked' }),
    sender: z.string().nullable(),
    custom_id: z.string().nullable(),
    status: z.enum(['pending', 'queued', 'sending', 'success', 'failed', 'unknown']),
    message_id: nullableNumber,
    price: nullableNumber,
    parts: nullableNumber,
    amount: nullableNumber,
    error: z.string().nullable(),
    error_code: z.string().nullable(),
    attempts: z.number(),
    created_at: z.string().nullable(),
    sent_at: z.string().nullable(),
    updated_at: z.string(),
    resent_after_unknown: z.boolean().meta({ description: 'Resent after WebSMS said an unknown attempt never arrived: a possible duplicate' }),
    expected_send_at: z.string().nullable().meta({ description: 'While it waits: when WebSMS is expected to receive it, computed from its place in its line now' }),
    position: z
      .number()
      .int()
      .nullable()
      .meta({ description: "Messages of its enterprise that go before it (0: next, or being sent); null when finished or waiting to retry a failed attempt" }),
    delivery_status: z.enum(['pending', 'delivered', 'undelivered', 'unknown']).nullable().meta({
      description: 'Whether it reached the phone, as WebSMS reports it: pending until final; unknown when WebSMS has no record or it never became final; null when it was not sent',
    }),
    delivered_at: z.string().nullable().meta({ description: 'When the final delivery status (delivered or undelivered) was learned' }),
  });

export const healthSchema = z
  .object({
    status: z.enum(['healthy', 'unhealthy']),
    timestamp: z.string(),
    database: z.string(),
    redis: z.string(),
    queue: z.union([z.string(), z.record(z.string(), z.number())]),
    workers: z.number().nullable(),
    port: z.number(),
  });

export const serviceInfoSchema = z
  .object({
    service: z.string(),
    status: z.string(),
    timestamp: z.string(),
    config: z.object({ websms_url: z.string(), default_sender: z.string(), port: z.number() }),
  });
