import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { ExpressAdapter } from '@bull-board/express';
import type { Queue } from 'bullmq';
import { Router, type RequestHandler } from 'express';
import { maskPhone } from '../logger.ts';
import { errorEnvelope } from '../messages/message.ts';

// The queue dashboard (bull-board) on /admin/queues, for operators only.
// - Operators only (app.ts mounts the guard): ADMIN_USER/ADMIN_PASSWORD, or a direct local peer when
//   those are not set (ssh -L to the host).
// - Read-only by default (DASHBOARD_READ_ONLY): its write actions (retry, remove, add, pause, clean)
//   act on Redis alone, behind the back of the message rows that are the truth. A removed job leaves
//   its message `queued` for good; a retried job whose row is final is not sent again. Retrying or
//   dropping a message is `npm run jobs -- retry|drop <id>`, which records the action on the row.
// - Job data is ids only (queue/jobs.ts). Every answer is still passed through `redactDashboard`,
//   so that a phone or a key reaching a job by some later mistake (a return value, an error text,
//   a stack trace, a log line) is masked on screen rather than shown.

export const DASHBOARD_PATH = '/admin/queues';

type BoardServerAdapter = Parameters<typeof createBullBoard>[0]['serverAdapter'];

export interface DashboardDeps {
  queue: Queue;
  readOnly: boolean;
}

export function dashboardRoutes(deps: DashboardDeps): Router {
  const router = Router();
  if (deps.readOnly) router.use(DASHBOARD_PATH, refuseChanges);

  const serverAdapter = new ExpressAdapter();
  serverAdapter.setBasePath(DASHBOARD_PATH);
  createBullBoard({
    queues: [
      new BullMQAdapter(deps.queue, {
        readOnlyMode: deps.readOnly,
        allowRetries: !deps.readOnly,
        description: 'One job per message: data is the message id and enterprise number; the message itself is in PostgreSQL (user_sms_send).',
      }),
    ],
    // @bull-board/express pins its own copy of @bull-board/api (9.10.1 beside our 9.10.2): the same
    // interface, declared twice, which TypeScript cannot tell apart from two different ones.
    serverAdapter: serverAdapter as unknown as BoardServerAdapter,
    options: {
      uiConfig: { boardTitle: 'User SMS queue' },
      handlerHooks: { after: (_context, result) => ({ ...result, body: redactDashboard(result.body) as typeof result.body }) },
    },
  });
  router.use(DASHBOARD_PATH, serverAdapter.getRouter() as RequestHandler);
  return router;
}

/**
 * bull-board refuses most writes on a read-only queue, but not all of them the same way (pause-all
 * skips read-only queues and still answers 200). Read-only here means no request that could change
 * anything reaches it at all.
 */
const refuseChanges: RequestHandler = (req, res, next) => {
  if (req.method === 'GET' || req.method === 'HEAD') return next();
  res.setHeader('Allow', 'GET, HEAD');
  res.status(405).json(errorEnvelope('The queue dashboard is read-only (DASHBOARD_READ_ONLY); use `npm run jobs -- retry|drop <id>`'));
};

/** Keys whose values are secrets wherever they appear. */
const SECRET_KEY = /^(api_?key|apikey|custom_?domain|password|authorization|credentials?|token|secret)$/i;
/** A phone number as it could appear in a text: international digits, with or without '+'. */
const PHONE_IN_TEXT = /(?<![\w.])\+?\d{9,15}(?![\w.])/g;

/** A deep copy with secret-named values replaced and phone-like numbers in strings masked. */
export function redactDashboard(value: unknown, depth = 0): unknown {
  if (depth > 20) return '[too deep]';
  if (typeof value === 'string') return value.replace(PHONE_IN_TEXT, (phone) => maskPhone(phone));
  if (Array.isArray(value)) return value.map((item) => redactDashboard(item, depth + 1));
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([key, item]) => [key, SECRET_KEY.test(key) ? '[redacted]' : redactDashboard(item, depth + 1)]),
    );
  }
  return value;
}
