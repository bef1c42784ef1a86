import { normalisePhone } from '../api/schemas.ts';

// What support staff may search messages by, read from the console's query string. Pure: every
// value is checked here, before any SQL, so that no input can reach PostgreSQL in a shape it would
// refuse (a NUL byte, a number past BIGINT, a date out of range: each would be a 500) or that would
// make the search scan the table (see message-search-repository.ts for the index each one uses).

export interface SearchCriteria {
  /** our message id (the primary key) */
  id?: number;
  enterprise?: string;
  /** E.164, as stored; the search is exact, so results show it unmasked */
  phone?: string;
  customId?: string;
  /** WebSMS's message_id */
  websmsMessageId?: string;
  /** created_at bounds, as server-local wall time (the column's convention): `YYYY-MM-DD HH:MM:SS` */
  from?: string;
  to?: string;
  /** keyset paging: rows older than this message (by created_at, then id) */
  before?: number;
}

export interface SearchForm {
  /** the values as typed, to show them back in the form */
  values: Record<SearchField, string>;
  criteria: SearchCriteria;
  /** field → what is wrong with it; non-empty: nothing is searched */
  errors: Partial<Record<SearchField | 'range' | 'query', string>>;
}

export const SEARCH_FIELDS = ['id', 'enterprise', 'phone', 'custom_id', 'message_id', 'from', 'to', 'before'] as const;
export type SearchField = (typeof SEARCH_FIELDS)[number];

/** Rows per page: every search is one bounded index scan of at most this many rows (plus one). */
export const PAGE_SIZE = 50;
/** The longest time range one search may cover. */
export const MAX_RANGE_DAYS = 366;

const MAX_INPUT = 64;
const DATE_TIME = /^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2}))?)?$/;

export function parseSearch(query: Record<string, unknown>): SearchForm {
  const values = Object.fromEntries(SEARCH_FIELDS.map((field) => [field, ''])) as Record<SearchField, string>;
  const errors: SearchForm['errors'] = {};
  const criteria: SearchCriteria = {};

  const unknown = Object.keys(query).filter((name) => !(SEARCH_FIELDS as readonly string[]).includes(name));
  if (unknown.length > 0) errors.query = `unknown parameter ${JSON.stringify(unknown[0]!.slice(0, 40))}: search by ${SEARCH_FIELDS.join(', ')}`;

  for (const field of SEARCH_FIELDS) {
    const raw = query[field];
    if (raw === undefined) continue;
    if (typeof raw !== 'string') {
      errors[field] = 'give it once';
      continue;
    }
    const value = raw.trim();
    values[field] = value.slice(0, MAX_INPUT * 2);
    if (value === '') continue;
    const problem = textProblem(value);
    if (problem) {
      errors[field] = problem;
      continue;
    }
    switch (field) {
      case 'id':
      case 'before': {
        const id = positiveInteger(value, 15);
        if (id === undefined) errors[field] = 'a message id: digits only';
        else criteria[field === 'id' ? 'id' : 'before'] = Number(id);
        break;
      }
      case 'message_id': {
        // BIGINT holds 18 digits for sure; WebSMS's ids are far shorter.
        const id = positiveInteger(value, 18);
        if (id === undefined) errors[field] = "WebSMS's message_id: digits only";
        else criteria.websmsMessageId = id;
        break;
      }
      case 'enterprise':
        if ([...value].length > 10) errors[field] = 'an enterprise number has at most 10 characters';
        else criteria.enterprise = value;
        break;
      case 'custom_id':
        if ([...value].length > 20) errors[field] = 'a custom_id has at most 20 characters';
        else criteria.customId = value;
        break;
      case 'phone': {
        const phone = normalisePhone(value);
        if (phone === null) errors[field] = 'the whole number in international format, e.g. +375296254070';
        else criteria.phone = phone;
        break;
      }
      case 'from':
      case 'to': {
        const wallTime = parseWallTime(value, field === 'to');
        if (wallTime === undefined) errors[field] = 'a date and time: YYYY-MM-DD HH:MM';
        else criteria[field] = wallTime;
        break;
      }
    }
  }

  if (criteria.from !== undefined && criteria.to !== undefined) {
    const days = (Date.parse(`${criteria.to.replace(' ', 'T')}Z`) - Date.parse(`${criteria.from.replace(' ', 'T')}Z`)) / 86_400_000;
    if (days < 0) errors.range = '"from" is after "to"';
    else if (days > MAX_RANGE_DAYS) errors.range = `at most ${MAX_RANGE_DAYS} days at a time`;
  }
  return { values, criteria, errors };
}

/** Whether the search names anything at all (without criteria the console lists the newest messages). */
export function hasCriteria(criteria: SearchCriteria): boolean {
  return Object.entries(criteria).some(([key, value]) => key !== 'before' && value !== undefined);
}

function textProblem(value: string): string | undefined {
  if (!value.isWellFormed()) return 'not valid Unicode text';
  if (/[\u0000-\u001F\u007F-\u009F]/.test(value)) return 'control characters are not allowed';
  if ([...value].length > MAX_INPUT) return `at most ${MAX_INPUT} characters`;
  return undefined;
}

function positiveInteger(value: string, maxDigits: number): string | undefined {
  if (!/^\d+$/.test(value)) return undefined;
  const digits = value.replace(/^0+/, '');
  if (digits === '' || digits.length > maxDigits) return undefined;
  return digits;
}

/**
 * `YYYY-MM-DD[ HH:MM[:SS]]` (what a datetime-local input sends, with a T) → `YYYY-MM-DD HH:MM:SS`,
 * only for real calendar dates between 2000 and 2099. A date alone is the start of that day, or its
 * last second for an upper bound.
 */
export function parseWallTime(value: string, upper: boolean): string | undefined {
  const match = DATE_TIME.exec(value);
  if (!match) return undefined;
  const [year, month, day, hour, minute, second] = match.slice(1).map((part) => (part === undefined ? undefined : Number(part)));
  if (year! < 2000 || year! > 2099) return undefined;
  const date = new Date(Date.UTC(year!, month! - 1, day));
  if (date.getUTCMonth() !== month! - 1 || date.getUTCDate() !== day!) return undefined;
  const h = hour ?? (upper ? 23 : 0);
  const m = minute ?? (upper ? 59 : 0);
  const s = second ?? (upper ? 59 : 0);
  if (h > 23 || m > 59 || s > 59) return undefined;
  const two = (n: number) => String(n).padStart(2, '0');
  return `${year}-${two(month!)}-${two(day)} ${two(h)}:${two(m)}:${two(s)}`;
}
