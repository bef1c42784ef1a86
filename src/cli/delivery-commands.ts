import type { Db } from '../db/database.ts';
import { listPolled, type PolledMessage } from '../delivery/delivery-repository.ts';
import { WEBSMS_STATUS_CODES } from '../delivery/delivery-status.ts';
import { EXIT } from './args.ts';
import { formatLocalTime, formatTable } from './table.ts';

// `npm run jobs -- polling` (composed in jobs.ts): the messages whose delivery status is still being
// asked about, soonest check first. The rows are the polling's queue, so this is the whole of it.

export const POLLING_USAGE = `       npm run jobs -- polling [--enterprise <number>] [--limit <n>] [--json]

  polling  sent messages whose delivery status is still asked about at WebSMS, next check first.`;

const COLUMNS = [
  { key: 'message', align: 'right' },
  { key: 'enterprise', align: 'left' },
  { key: 'sent_at', align: 'left' },
  { key: 'checks', align: 'right' },
  { key: 'last_status', align: 'left' },
  { key: 'next_check', align: 'left' },
] as const;

const lastStatus = (code: number | null) => (code === null ? null : `${code} ${WEBSMS_STATUS_CODES[code]?.name ?? ''}`.trim());

function polledJson(message: PolledMessage): Record<string, unknown> {
  return {
    message_id: message.id,
    enterprise_number: message.enterpriseNumber,
    sent_at: message.sentAt?.toISOString() ?? null,
    checks: message.checks,
    delivery_code: message.deliveryCode,
    next_check_at: message.nextCheckAt.toISOString(),
  };
}

function polledRow(message: PolledMessage): Record<string, unknown> {
  return {
    message: message.id,
    enterprise: message.enterpriseNumber,
    sent_at: message.sentAt ? formatLocalTime(message.sentAt) : null,
    checks: message.checks,
    last_status: lastStatus(message.deliveryCode),
    next_check: formatLocalTime(message.nextCheckAt),
  };
}

export async function listPollingCommand(db: Db, options: { enterprise?: string | undefined; limit: number; json: boolean }): Promise<number> {
  const polled = await listPolled(db, options);
  if (options.json) process.stdout.write(`${JSON.stringify(polled.map(polledJson), null, 2)}\n`);
  else process.stdout.write(`${formatTable(COLUMNS, polled.map(polledRow))}\n`);
  return EXIT.ok;
}
