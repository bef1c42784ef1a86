import { redactDashboard } from '../api/dashboard.ts';
import { withoutQuery, type CallbackEventView } from '../callbacks/callback-inspection.ts';
import { formatLocalTime } from '../cli/table.ts';
import { WEBSMS_STATUS_CODES } from '../delivery/delivery-status.ts';
import type { MessageStanding } from '../line/standing.ts';
import { maskPhone } from '../logger.ts';
import { isFinal } from '../messages/message.ts';
import { html, type Html, type HtmlValue } from './html.ts';
import type { MessageStory, MessageSummary } from './message-console-repository.ts';
import { MAX_RANGE_DAYS, SEARCH_FIELDS, type SearchField, type SearchForm } from './message-search.ts';

// The console's pages: plain HTML forms and tables, no script at all (the CSP forbids any), styled by
// one stylesheet. Every value goes through `html`, which escapes it. Phones are masked unless the
// operator searched for that exact number; no status key or WebSMS key is ever on a page.

export const CONSOLE_PATH = '/admin/messages';
export const STYLESHEET_PATH = `${CONSOLE_PATH}/console.css`;

export const STYLESHEET = `
:root { color-scheme: light dark; font-family: system-ui, sans-serif; line-height: 1.4; }
body { margin: 0 auto; max-width: 72rem; padding: 0 1rem 2rem; }
header { display: flex; gap: 1rem; align-items: baseline; border-bottom: 1px solid #8884; padding: .5rem 0; }
header p { margin: 0; }
a { color: LinkText; }
form.search { display: grid; grid-template-columns: repeat(auto-fill, minmax(13rem, 1fr)); gap: .5rem 1rem; align-items: end; }
form.search div { display: flex; flex-direction: column; }
label { font-weight: 600; font-size: .9rem; }
input { font: inherit; padding: .25rem; }
.hint { font-size: .8rem; color: GrayText; }
.error { color: #b00020; font-weight: 600; }
@media (prefers-color-scheme: dark) { .error { color: #ff8a80; } }
[role=alert], .notice { border: 2px solid currentColor; padding: .5rem 1rem; margin: 1rem 0; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #8884; vertical-align: top; }
caption { text-align: left; font-weight: 600; padding: .5rem 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; overflow-wrap: anywhere; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; background: #8881; padding: .5rem; }
.actions { display: flex; gap: 1rem; }
button { font: inherit; padding: .25rem 1rem; }
`;

const LABELS: Record<SearchField, string> = {
  id: 'Message id',
  enterprise: 'Enterprise',
  phone: 'Phone',
  custom_id: 'custom_id',
  message_id: 'WebSMS message_id',
  from: 'Created from',
  to: 'Created until',
  before: 'Older than message',
};

const HINTS: Partial<Record<SearchField, string>> = {
  phone: 'the exact number, e.g. +375296254070',
  enterprise: 'e.g. 0367',
  from: 'server time',
  to: 'server time',
};

function layout(title: string, body: Html | Html[]): string {
  return `<!doctype html>\n${html`<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="same-origin">
<title>${title} · User SMS</title>
<link rel="stylesheet" href="${STYLESHEET_PATH}">
</head>
<body>
<header><p><strong>User SMS</strong></p><nav aria-label="Operator pages"><a href="${CONSOLE_PATH}">Messages</a> · <a href="/admin/queues">Queue</a></nav></header>
<main>
${body}
</main>
</body>
</html>`.toString()}\n`;
}

const time = (date: Date | null | undefined): HtmlValue => (date ? html`<time datetime="${date.toISOString()}">${formatLocalTime(date)}</time>` : '—');
const orDash = (value: string | number | null | undefined): HtmlValue => (value === null || value === undefined || value === '' ? '—' : value);

export interface PhoneView {
  /** the exact number the operator searched for (E.164); only that one is shown in full */
  searched?: string | undefined;
}

function phone(value: string, view: PhoneView): string {
  return view.searched !== undefined && view.searched === value ? value : maskPhone(value);
}

function messageHref(id: number, view: PhoneView): string {
  return view.searched === undefined ? `${CONSOLE_PATH}/${id}` : `${CONSOLE_PATH}/${id}?phone=${encodeURIComponent(view.searched)}`;
}

function searchForm(form: SearchForm): Html {
  const fields = SEARCH_FIELDS.filter((field) => field !== 'before');
  const errorIds = (field: SearchField) => (form.errors[field] ? `${field}-error` : undefined);
  return html`<form class="search" method="get" action="${CONSOLE_PATH}" role="search" aria-label="Find messages">
${fields.map((field) => {
  const hint = HINTS[field];
  const describedBy = [hint ? `${field}-hint` : undefined, errorIds(field)].filter(Boolean).join(' ');
  const type = field === 'from' || field === 'to' ? 'datetime-local' : field === 'phone' ? 'tel' : 'text';
  const value = type === 'datetime-local' ? form.values[field].replace(' ', 'T') : form.values[field];
  return html`<div>
<label for="${field}">${LABELS[field]}</label>
<input id="${field}" name="${field}" type="${type}" value="${value}"${type === 'datetime-local' ? html` step="1"` : ''}${field === 'id' || field === 'message_id' ? html` inputmode="numeric"` : ''}${describedBy ? html` aria-describedby="${describedBy}"` : ''}${form.errors[field] ? html` aria-invalid="true"` : ''}>
${hint ? html`<span class="hint" id="${field}-hint">${hint}</span>` : ''}
${form.errors[field] ? html`<span class="error" id="${field}-error">${form.errors[field]}</span>` : ''}
</div>`;
})}
<div><button type="submit">Search</button></div>
</form>`;
}

function errorSummary(form: SearchForm): HtmlValue {
  const entries = Object.entries(form.errors);
  if (entries.length === 0) return '';
  return html`<div role="alert"><p>Nothing was searched:</p><ul>${entries.map(
    ([field, text]) => html`<li>${field === 'range' ? 'Time range' : field === 'query' ? 'Address' : LABELS[field as SearchField]}: ${text}</li>`,
  )}</ul></div>`;
}

export interface SearchPageModel {
  form: SearchForm;
  /** undefined: not searched (invalid input) */
  results?: MessageSummary[] | undefined;
  /** a further page exists: the cursor for it */
  olderThan?: number | undefined;
  /** the search took too long and was stopped */
  tooSlow?: boolean;
}

export function searchPage(model: SearchPageModel): string {
  const { form } = model;
  const view: PhoneView = { searched: form.criteria.phone };
  const older = model.olderThan === undefined ? undefined : olderHref(form, model.olderThan);
  const results = model.results;
  return layout(
    'Messages',
    html`<h1>Messages</h1>
<p>Find messages by any of these; several narrow the search. Without any, the newest come first. A time range covers at most ${MAX_RANGE_DAYS} days.</p>
${searchForm(form)}
${errorSummary(form)}
${model.tooSlow ? html`<div role="alert"><p>The search took too long and was stopped: narrow it (an enterprise, a phone or a shorter time range).</p></div>` : ''}
${
  results === undefined
    ? ''
    : results.length === 0
      ? html`<p role="status">No messages found.</p>`
      : html`<table>
<caption>${results.length} message${results.length === 1 ? '' : 's'}, newest first${form.criteria.before === undefined ? '' : ' (older page)'}</caption>
<thead><tr><th scope="col">Id</th><th scope="col">Created</th><th scope="col">Enterprise</th><th scope="col">Phone</th><th scope="col">Sender</th><th scope="col">custom_id</th><th scope="col">Status</th><th scope="col">Delivery</th><th scope="col">WebSMS id</th><th scope="col">Text</th></tr></thead>
<tbody>
${results.map(
  (m) => html`<tr>
<td><a href="${messageHref(m.id, view)}">${m.id}</a></td><td>${time(m.createdAt)}</td><td>${m.enterpriseNumber}</td><td>${phone(m.phone, view)}</td>
<td>${orDash(m.sender)}</td><td>${orDash(m.customId)}</td><td>${m.status}${m.errorCode ? html` (${m.errorCode})` : ''}</td><td>${orDash(m.deliveryStatus)}</td>
<td>${orDash(m.websmsMessageId)}</td><td>${m.textPreview}</td>
</tr>`,
)}
</tbody>
</table>
${older ? html`<p><a href="${older}" rel="next">Older messages</a></p>` : ''}`
}`,
  );
}

function olderHref(form: SearchForm, olderThan: number): string {
  const params = new URLSearchParams();
  for (const field of SEARCH_FIELDS) if (field !== 'before' && form.values[field] !== '') params.set(field, form.values[field]);
  params.set('before', String(olderThan));
  return `${CONSOLE_PATH}?${params.toString()}`;
}

export interface StoryPageModel {
  story: MessageStory;
  standing: MessageStanding | undefined;
  callbacks: CallbackEventView[];
  view: PhoneView;
  /** undefined: read-only, no buttons */
  actions?: { csrfToken: string; retry: boolean } | undefined;
  /** the outcome of an action just taken */
  notice?: { text: string; alert: boolean } | undefined;
}

export function storyPage(model: StoryPageModel): string {
  const { story: m, standing, view } = model;
  const deliveryName = m.deliveryCode === null ? undefined : WEBSMS_STATUS_CODES[m.deliveryCode]?.name;
  return layout(
    `Message ${m.id}`,
    html`<h1>Message ${m.id}: ${m.status}</h1>
${model.notice ? html`<div ${model.notice.alert ? html`role="alert"` : html`role="status" class="notice"`}><p>${model.notice.text}</p></div>` : ''}
<p><a href="${CONSOLE_PATH}?enterprise=${encodeURIComponent(m.enterpriseNumber)}">Other messages of enterprise ${m.enterpriseNumber}</a></p>

<section aria-labelledby="accepted"><h2 id="accepted">Accepted</h2>
<dl>
<dt>At</dt><dd>${time(m.createdAt)}</dd>
<dt>Enterprise</dt><dd>${m.enterpriseNumber}${m.enterpriseName ? html` (${m.enterpriseName})` : ''}</dd>
<dt>Phone</dt><dd>${phone(m.phone, view)}</dd>
<dt>Sender</dt><dd>${orDash(m.sender)}</dd>
<dt>custom_id</dt><dd>${orDash(m.customId)}</dd>
<dt>Text</dt><dd><pre>${m.text}</pre></dd>
<dt>Caller</dt><dd>${orDash(m.serviceName)}${m.requestIp ? html` from ${m.requestIp}` : ''}</dd>
<dt>User-Agent</dt><dd>${orDash(m.userAgent)}</dd>
<dt>Callback URL</dt><dd>${m.callbackUrl ? withoutQuery(m.callbackUrl) : '—'}</dd>
</dl></section>

<section aria-labelledby="line"><h2 id="line">In line</h2>
${
  isFinal(m.status)
    ? html`<p>Not waiting any more: finished (${m.status}).</p>`
    : html`<dl>
<dt>Position</dt><dd>${standing?.position === null || standing?.position === undefined ? 'not in its line now (waiting to retry, or being looked after)' : standing.position === 0 ? '0: next, or being sent now' : html`${standing.position} of its enterprise's messages go before it`}</dd>
<dt>Expected send</dt><dd>${time(standing?.expectedSendAt ?? m.notBefore)}</dd>
</dl>`
}
<dl><dt>Waited for a slot until</dt><dd>${time(m.notBefore)}</dd><dt>Claimed by a worker</dt><dd>${time(m.claimedAt)}</dd></dl>
</section>

<section aria-labelledby="sent"><h2 id="sent">Sent to WebSMS</h2>
<dl>
<dt>Attempts</dt><dd>${m.attempts}</dd>
<dt>Accepted by WebSMS at</dt><dd>${time(m.sentAt)}</dd>
<dt>Our reference</dt><dd>${orDash(m.providerRef)}</dd>
${m.resentAfterUnknown ? html`<dt>Resent</dt><dd>after an unknown outcome: WebSMS's look-up said the first attempt never arrived</dd>` : ''}
<dt>Last change</dt><dd>${time(m.updatedAt)}</dd>
</dl></section>

<section aria-labelledby="answer"><h2 id="answer">WebSMS's answer</h2>
<dl>
<dt>message_id</dt><dd>${orDash(m.websmsMessageId)}</dd>
<dt>Price / parts / amount</dt><dd>${orDash(m.price)} / ${orDash(m.parts)} / ${orDash(m.amount)}</dd>
<dt>Error</dt><dd>${orDash(m.error)}${m.errorCode ? html` (${m.errorCode})` : ''}</dd>
</dl>
${m.response === null || m.response === undefined ? html`<p>No answer stored.</p>` : html`<pre>${JSON.stringify(redactDashboard(m.response), null, 2)}</pre>`}
</section>

<section aria-labelledby="delivery"><h2 id="delivery">Delivery</h2>
<dl>
<dt>Status</dt><dd>${m.deliveryStatus ?? 'not asked (never accepted by WebSMS, or sent before delivery was tracked)'}</dd>
<dt>WebSMS status code</dt><dd>${m.deliveryCode === null ? '—' : `${m.deliveryCode}${deliveryName ? ` (${deliveryName})` : ''}`}</dd>
<dt>Final status learned at</dt><dd>${time(m.deliveredAt)}</dd>
<dt>Checks made</dt><dd>${m.deliveryChecks}</dd>
<dt>Next check</dt><dd>${time(m.deliveryNextCheckAt)}</dd>
</dl></section>

<section aria-labelledby="callbacks"><h2 id="callbacks">Callbacks</h2>
${
  model.callbacks.length === 0
    ? html`<p>No callback events.</p>`
    : html`<table><caption>Events, oldest first</caption>
<thead><tr><th scope="col">Event</th><th scope="col">Type</th><th scope="col">Status</th><th scope="col">Attempts</th><th scope="col">Created</th><th scope="col">Last attempt</th><th scope="col">Last answer</th><th scope="col">Target</th></tr></thead>
<tbody>${model.callbacks.map(
        (e) => html`<tr><td>${e.eventId}</td><td>${e.type}</td><td>${e.status}${e.nextAttemptAt ? html`, next at ${time(e.nextAttemptAt)}` : ''}</td><td>${e.attempts}</td>
<td>${time(e.createdAt)}</td><td>${time(e.lastAttemptAt)}</td><td>${lastAnswer(e)}</td><td>${e.target}</td></tr>`,
      )}</tbody></table>
${model.callbacks.some((e) => e.status === 'given_up') ? html`<p>A given-up event is retried with <code>npm run jobs -- retry-callback &lt;event&gt;</code>.</p>` : ''}`
}
</section>

<section aria-labelledby="operator"><h2 id="operator">Operator actions</h2>
${
  m.operatorActions.length === 0
    ? html`<p>None.</p>`
    : html`<table><caption>Oldest first</caption>
<thead><tr><th scope="col">At</th><th scope="col">Action</th><th scope="col">By</th><th scope="col">Status</th><th scope="col">Queue job</th><th scope="col">Reason</th></tr></thead>
<tbody>${m.operatorActions.map(
        (a) => html`<tr><td>${time(validDate(a.at))}</td><td>${a.action}</td><td>${a.by}</td><td>${a.from} → ${a.to}</td><td>${a.job}</td><td>${orDash(a.reason)}</td></tr>`,
      )}</tbody></table>`
}
</section>
${actionsSection(m, model.actions)}`,
  );
}

function actionsSection(m: MessageStory, actions: StoryPageModel['actions']): HtmlValue {
  if (!actions) return '';
  const cancellable = m.status === 'pending' || m.status === 'queued';
  const retryable = actions.retry && (m.status === 'unknown' || (m.status === 'failed' && m.attempts > 0));
  if (!cancellable && !retryable) return '';
  const button = (action: 'cancel' | 'retry', label: string, explanation: string) => html`<form method="post" action="${CONSOLE_PATH}/${m.id}/${action}">
<input type="hidden" name="csrf" value="${actions.csrfToken}">
<button type="submit" aria-describedby="${action}-explanation">${label}</button>
<p class="hint" id="${action}-explanation">${explanation}</p>
</form>`;
  return html`<section aria-labelledby="act"><h2 id="act">Act</h2><div class="actions">
${cancellable ? button('cancel', 'Cancel this message', 'Not sent yet: it is taken out of its line and closed as failed (cancelled), as npm run jobs -- drop does.') : ''}
${retryable ? button('retry', 'Retry this message', m.status === 'unknown' ? 'It may have been sent: a worker looks it up at WebSMS first and resends only if WebSMS never received it.' : 'WebSMS never accepted it: it is queued to be sent again, as npm run jobs -- retry does.') : ''}
</div></section>`;
}

/** A callback attempt's answer: its HTTP status, and the error when it says more than that. */
function lastAnswer(event: CallbackEventView): string {
  const status = event.lastHttpStatus === null ? '' : `HTTP ${event.lastHttpStatus}`;
  if (!event.lastError || event.lastError.startsWith(status || '\u0000')) return status || (event.lastError ?? '—');
  return status ? `${status}: ${event.lastError}` : event.lastError;
}

function validDate(text: string): Date | null {
  const date = new Date(text);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function errorPage(title: string, text: string): string {
  return layout(title, html`<h1>${title}</h1><div role="alert"><p>${text}</p></div><p><a href="${CONSOLE_PATH}">Find messages</a></p>`);
}
