import { sql } from 'kysely';
import type { Db } from '../db/database.ts';
import type { WebsmsCredentials } from '../websms/client.ts';
import { parseCustomDomain } from './credentials.ts';
import { serverClockFrom, type ServerClock } from '../db/server-clock.ts';

export interface Enterprise {
  number: string;
  name: string | null;
  /** null when the enterprise has no usable WebSMS configuration */
  credentials: WebsmsCredentials | null;
  active: boolean;
}

export async function findEnterprise(db: Db, number: string): Promise<Enterprise | undefined> {
  return (await findEnterpriseOnServerClock(db, number))?.enterprise;
}

/** findEnterprise, with PostgreSQL's clock as it read the row (for the admission's deadline). */
export async function findEnterpriseOnServerClock(db: Db, number: string): Promise<{ enterprise: Enterprise; clock: ServerClock } | undefined> {
  // PostgreSQL text cannot hold NUL, so no enterprise has one; asking would fail the query instead.
  if (number.includes('\u0000')) return undefined;
  const row = await db
    .selectFrom('enterprises')
    .select(['number', 'name', 'custom_domain', 'active', sql<Date>`clock_timestamp()`.as('server_time')])
    .where('number', '=', number)
    .executeTakeFirst();
  return row && { enterprise: toEnterprise(row), clock: serverClockFrom(row.server_time) };
}

function toEnterprise(row: { number: string; name: string | null; custom_domain: string | null; active: boolean | null }): Enterprise {
  // The wider system's table may hold NULL in `active`: only an explicit false disables.
  return { number: row.number, name: row.name, credentials: parseCustomDomain(row.custom_domain), active: row.active !== false };
}

/** Several enterprises in one read, by number; the unknown ones are simply absent. */
export async function findEnterprises(db: Db, numbers: readonly string[]): Promise<Map<string, Enterprise>> {
  const asked = [...new Set(numbers)].filter((number) => !number.includes('\u0000'));
  if (asked.length === 0) return new Map();
  // One array parameter: the same statement text (kept prepared) whatever the count.
  const rows = await db
    .selectFrom('enterprises')
    .select(['number', 'name', 'custom_domain', 'active'])
    .where(sql<boolean>`number = ANY(${asked}::text[])`)
    .execute();
  return new Map(rows.map((row) => [row.number, toEnterprise(row)]));
}

/** Ready to send: exists, active and configured. */
export function canSend(enterprise: Enterprise | undefined): enterprise is Enterprise & { credentials: WebsmsCredentials } {
  return enterprise !== undefined && enterprise.active && enterprise.credentials !== null;
}

export function notFoundMessage(number: string): string {
  return `Enterprise ${number} not found or has no WebSMS configuration`;
}
