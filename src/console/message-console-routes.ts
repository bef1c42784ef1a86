import { randomBytes } from 'node:crypto';
import express, { Router, type Request, type RequestHandler, type Response } from 'express';
import { accessOf } from '../api/access.ts';
import { safeEqual } from '../api/admin-auth.ts';
import { normalisePhone } from '../api/schemas.ts';
import { CALLBACK_STATES, listCallbackEvents } from '../callbacks/callback-inspection.ts';
import type { Db } from '../db/database.ts';
import type { MessageStanding } from '../line/standing.ts';
import type { Logger } from '../logger.ts';
import type { MessageRecord } from '../messages/message.ts';
import { findMessage } from '../messages/repository.ts';
import type { ActionResult } from '../queue/inspection.ts';
import { findMessageStory, QUERY_CANCELED, searchMessages } from './message-console-repository.ts';
import { PAGE_SIZE, parseSearch } from './message-search.ts';
import { CONSOLE_PATH, errorPage, searchPage, storyPage, STYLESHEET, STYLESHEET_PATH, type StoryPageModel } from './message-console-views.ts';

// The message console on /admin/messages: support staff find messages and read each one's story.
// - Operators only: app.ts guards /admin (ADMIN_USER/ADMIN_PASSWORD, or a direct local peer).
// - Server-rendered HTML without any script; the CSP forbids scripts outright, and every value on a
//   page is escaped (html.ts), so a stored `<script>` text or sender stays text.
// - Cancel and retry only when DASHBOARD_READ_ONLY is false, through the jobs CLI's own use cases
//   (queue/inspection.ts), recorded in the row's operator_actions.
// - The pages are behind HTTP Basic, which a browser sends by itself, even on a form another site
//   posts: every POST must come from a page of this origin (Sec-Fetch-Site / Origin) and carry the
//   token of the console's own SameSite=Strict cookie (double submit).

export interface MessageConsoleDeps {
  db: Db;
  logger: Logger;
  /** DASHBOARD_READ_ONLY: no buttons, and POSTs are refused */
  readOnly: boolean;
  /** where an unfinished message stands in its line now (src/line/standing.ts) */
  standing?: ((record: MessageRecord) => Promise<MessageStanding>) | undefined;
  /** the cancel use case (queue/inspection.ts cancelMessage) */
  cancel: (messageId: number, by: string) => Promise<ActionResult>;
  /** the retry use case (queue/inspection.ts retryMessage); undefined: no retry button */
  retry?: ((messageId: number, by: string) => Promise<ActionResult>) | undefined;
}

const CSRF_COOKIE = 'user_sms_console_csrf';
const ID = /^[1-9]\d{0,14}$/;
const SECURITY_HEADERS: Record<string, string> = {
  // No script of any kind, styles from the one stylesheet, forms only to this origin, never framed.
  'Content-Security-Policy':
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  // Search URLs may carry a phone number: never sent on to another site. (Not no-referrer: with it,
  // a browser sends `Origin: null` on the console's own forms, which the forgery check must refuse.)
  'Referrer-Policy': 'same-origin',
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Resource-Policy': 'same-origin',
  // Pages show personal data: not kept by the browser or any cache on the way.
  'Cache-Control': 'no-store',
};

export function messageConsoleRoutes(deps: MessageConsoleDeps): Router {
  const router = Router({ caseSensitive: false, strict: false });
  router.use(CONSOLE_PATH, securityHeaders);

  router.get(STYLESHEET_PATH, (_req, res) => {
    res.type('text/css').setHeader('Cache-Control', 'private, max-age=300');
    res.send(STYLESHEET);
  });

  router.get(CONSOLE_PATH, async (req, res) => {
    const form = parseSearch(req.query);
    if (Object.keys(form.errors).length > 0) {
      sendPage(res, 400, searchPage({ form }));
      return;
    }
    try {
      const rows = await searchMessages(deps.db, form.criteria);
      const page = rows.slice(0, PAGE_SIZE);
      const olderThan = rows.length > PAGE_SIZE ? page.at(-1)?.id : undefined;
      sendPage(res, 200, searchPage({ form, results: page, olderThan }));
    } catch (error) {
      if (!isQueryCanceled(error)) throw error;
      deps.logger.warn({ criteria: Object.keys(form.criteria) }, 'message console search stopped by its timeout');
      sendPage(res, 422, searchPage({ form, tooSlow: true }));
    }
  });

  router.get(`${CONSOLE_PATH}/:id`, async (req, res) => {
    const id = messageId(req, res);
    if (id === undefined) return;
    const notice = noticeOf(req.query.done);
    await sendStory(deps, req, res, id, notice ? { status: 200, notice } : { status: 200 });
  });

  const formBody = express.urlencoded({ extended: false, limit: 2_048, parameterLimit: 10 });
  for (const action of ['cancel', 'retry'] as const) {
    router.post(`${CONSOLE_PATH}/:id/${action}`, formBody, async (req, res) => {
      const id = messageId(req, res);
      if (id === undefined) return;
      const useCase = action === 'cancel' ? deps.cancel : deps.retry;
      if (deps.readOnly || !useCase) {
        res.setHeader('Allow', 'GET, HEAD');
        sendPage(res, 405, errorPage('Read-only', 'The message console is read-only (DASHBOARD_READ_ONLY): use npm run jobs -- retry|drop <id>.'));
        return;
      }
      const refusal = forgeryCheck(req);
      if (refusal) {
        deps.logger.warn({ messageId: id, action, refusal }, 'message console action refused: not from a console page');
        sendPage(res, 403, errorPage('Refused', `This ${action} did not come from a page of the message console (${refusal}). Open the message again and use its button.`));
        return;
      }
      const by = `operator ${accessOf(res).operator ?? 'unknown'} (console)`;
      const result = await useCase(id, by);
      deps.logger.info({ messageId: id, action, by, result: result.kind }, 'message console action');
      switch (result.kind) {
        case 'done':
          // Post/redirect/get: reloading the page does not repeat the action.
          res.redirect(303, `${CONSOLE_PATH}/${id}?done=${action}${phoneQuery(req)}`);
          return;
        case 'not-found':
          sendPage(res, 404, errorPage('Not found', `Message ${id} does not exist.`));
          return;
        case 'nothing':
          await sendStory(deps, req, res, id, { status: 200, notice: { text: `Nothing to do: ${result.explanation}.`, alert: false } });
          return;
        case 'refused':
          await sendStory(deps, req, res, id, { status: 409, notice: { text: `Not ${action === 'cancel' ? 'cancelled' : 'retried'}: ${result.reason}.`, alert: true } });
          return;
      }
    });
  }
  // Any other method or path under the console is simply not found (the app's 404), never a 5xx.
  return router;
}

const securityHeaders: RequestHandler = (_req, res, next) => {
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) res.setHeader(name, value);
  next();
};

function sendPage(res: Response, status: number, body: string): void {
  res.status(status).type('html').send(body);
}

/** The id in the path, or a 404 page already sent: ids are digits only, whatever else the path holds. */
function messageId(req: Request, res: Response): number | undefined {
  const raw = String(req.params.id ?? '');
  if (ID.test(raw)) return Number(raw);
  sendPage(res, 404, errorPage('Not found', 'No such message: a message id is a positive number.'));
  return undefined;
}

function noticeOf(done: unknown): { text: string; alert: boolean } | undefined {
  if (done === 'cancel') return { text: 'Cancelled: it will not be sent.', alert: false };
  if (done === 'retry') return { text: 'Retried: see its status below; reload to follow it.', alert: false };
  return undefined;
}

/** The exact phone searched for, when the request carries a valid one (the page then shows it unmasked). */
function searchedPhone(req: Request): string | undefined {
  const raw = req.query.phone;
  return typeof raw === 'string' && raw.length <= 64 ? (normalisePhone(raw) ?? undefined) : undefined;
}

function phoneQuery(req: Request): string {
  const phone = searchedPhone(req);
  return phone === undefined ? '' : `&phone=${encodeURIComponent(phone)}`;
}

async function sendStory(
  deps: MessageConsoleDeps,
  req: Request,
  res: Response,
  id: number,
  outcome: { status: number; notice?: StoryPageModel['notice'] },
): Promise<void> {
  const story = await findMessageStory(deps.db, id);
  if (!story) {
    sendPage(res, 404, errorPage('Not found', `Message ${id} does not exist.`));
    return;
  }
  const [standing, callbacks] = await Promise.all([
    storyStanding(deps, id),
    listCallbackEvents(deps.db, { statuses: CALLBACK_STATES, messageId: id, limit: 100 }).then((events) => events.reverse()),
  ]);
  const actions = deps.readOnly ? undefined : { csrfToken: csrfToken(req, res), retry: deps.retry !== undefined };
  sendPage(res, outcome.status, storyPage({ story, standing, callbacks, view: { searched: searchedPhone(req) }, actions, notice: outcome.notice }));
}

/** The message's place in its line, as GET /messages/{id} computes it. */
async function storyStanding(deps: MessageConsoleDeps, id: number): Promise<MessageStanding | undefined> {
  if (!deps.standing) return undefined;
  const record = await findMessage(deps.db, id);
  return record ? deps.standing(record) : undefined;
}

// ── Cross-site request forgery ──

function cookies(req: Request): Map<string, string> {
  const jar = new Map<string, string>();
  for (const part of (req.get('cookie') ?? '').split(';')) {
    const separator = part.indexOf('=');
    if (separator > 0) jar.set(part.slice(0, separator).trim(), part.slice(separator + 1).trim());
  }
  return jar;
}

/** The console's token: the cookie's, or a new one set now. Only this origin's pages can read it into a form. */
function csrfToken(req: Request, res: Response): string {
  const existing = cookies(req).get(CSRF_COOKIE);
  if (existing && /^[A-Za-z0-9_-]{43}$/.test(existing)) return existing;
  const token = randomBytes(32).toString('base64url');
  res.append('Set-Cookie', `${CSRF_COOKIE}=${token}; Path=${CONSOLE_PATH}; HttpOnly; SameSite=Strict`);
  return token;
}

/** Why a POST is refused as possibly forged, or undefined when it came from a console page. */
function forgeryCheck(req: Request): string | undefined {
  const site = req.get('sec-fetch-site');
  if (site !== undefined && site !== 'same-origin') return `Sec-Fetch-Site: ${site}`;
  const origin = req.get('origin');
  if (origin !== undefined) {
    let host: string | undefined;
    try {
      host = new URL(origin).host;
    } catch {
      host = undefined;
    }
    if (host === undefined || host.toLowerCase() !== (req.get('host') ?? '').toLowerCase()) return 'another origin';
  }
  const cookie = cookies(req).get(CSRF_COOKIE);
  const body: unknown = req.body;
  const sent = typeof body === 'object' && body !== null ? (body as Record<string, unknown>).csrf : undefined;
  if (!cookie || typeof sent !== 'string' || !safeEqual(cookie, sent)) return 'no valid form token';
  return undefined;
}

function isQueryCanceled(error: unknown): boolean {
  return typeof error === 'object' && error !== null && (error as { code?: unknown }).code === QUERY_CANCELED;
}
