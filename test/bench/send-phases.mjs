// Preloaded into the benchmark's service processes (NODE_OPTIONS="--import …"), never into a
// deployment. Listens to the send's phases the service publishes (src/metrics/send-phases.ts) and to
// Node's own HTTP server channels, and appends one JSON line per finished send, the time of each
// phase in ms on the machine's monotonic clock (process.hrtime: one clock for every process, where
// performance.timeOrigin is each process's own), to $BENCH_SEND_PHASES_DIR/<pid>.jsonl: the API's part of a send (request in →
// answer out) from the API, the worker's part (job started → job completed) from a worker.
// phase-breakdown.ts joins them with the load generator's own times. Plain JavaScript, as heap-probe.mjs.
//
// It listens only while the file `recording` exists in that directory (phase-breakdown.ts's
// recordSendPhases), and says so with `<pid>.listening`: the rest of the time nobody listens, and the
// service's processes run as they would in a deployment, so the throughput figures do not pay for it.
import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { appendFile, appendFileSync, existsSync, rmSync, writeFileSync } from 'node:fs';
import { setInterval } from 'node:timers';

const dir = process.env.BENCH_SEND_PHASES_DIR;
if (dir) {
  const file = `${dir}/${process.pid}.jsonl`;
  const now = () => Number(process.hrtime.bigint()) / 1e6;
  /** @type {Array<Record<string, number>>} */
  let finished = [];
  /** HTTP request → its marks (API) */
  const byRequest = new WeakMap();
  /** SendCommand → the same marks (API) */
  const byCommand = new WeakMap();
  /** @type {Map<number, Record<string, number>>} message id → the job's marks (worker) */
  const byMessage = new Map();

  const onRequest = (/** @type {any} */ event) => byRequest.set(event.request, { 'request-received': now() });
  const onResponse = (/** @type {any} */ event) => {
    const marks = byRequest.get(event.request);
    if (marks?.messageId === undefined) return;
    marks['answer-sent'] = now();
    finished.push(marks);
  };
  const onPhase = (/** @type {any} */ event) => {
    const at = now();
    if (event.command) {
      const marks = event.request ? byRequest.get(event.request) : byCommand.get(event.command);
      if (!marks) return;
      if (event.request) byCommand.set(event.command, marks);
      marks[event.phase] = at;
      if (event.messageId !== undefined) marks.messageId = event.messageId;
      return;
    }
    let marks = byMessage.get(event.messageId);
    if (!marks) byMessage.set(event.messageId, (marks = { messageId: event.messageId }));
    // A job run again (a wait for its turn) keeps its latest marks.
    marks[event.phase] = at;
    if (event.phase === 'job-completed') {
      byMessage.delete(event.messageId);
      finished.push(marks);
    }
  };
  const channels = /** @type {const} */ ([
    ['http.server.request.start', onRequest],
    ['http.server.response.finish', onResponse],
    ['user-sms:send-phase', onPhase],
  ]);
  const listening = `${dir}/${process.pid}.listening`;
  let subscribed = false;
  const follow = () => {
    const wanted = existsSync(`${dir}/recording`);
    if (wanted === subscribed) return;
    for (const [name, listener] of channels) (wanted ? subscribe : unsubscribe)(name, listener);
    subscribed = wanted;
    if (wanted) writeFileSync(listening, '');
    else rmSync(listening, { force: true });
  };

  const lines = () => {
    const text = finished.map((marks) => `${JSON.stringify(marks)}\n`).join('');
    finished = [];
    return text;
  };
  setInterval(() => {
    follow();
    if (finished.length > 0) appendFile(file, lines(), () => undefined);
  }, 100).unref();
  process.on('exit', () => {
    if (finished.length > 0) appendFileSync(file, lines());
  });
}
