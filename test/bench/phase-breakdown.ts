import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

// Where an idle send's time goes, hop by hop: the load generator's own times for each request, joined
// by message id with the phases the service's processes wrote (send-phases.mjs, published by
// src/metrics/send-phases.ts). Times are in ms on the machine's monotonic clock (process.hrtime), one
// clock for every process.

/** Each step runs from one phase to the next, in the order a send meets them. */
const STEPS = [
  ['sent', 'request-received', 'load generator → API (HTTP)'],
  ['request-received', 'validated', 'API: request parsed, checked, validated'],
  ['validated', 'enterprise-read', 'API: enterprise read (PostgreSQL)'],
  ['enterprise-read', 'admitted', 'API: row stored (PostgreSQL, commit)'],
  ['admitted', 'enqueued', 'API: joined its line, job added (Redis)'],
  ['enqueued', 'job-started', 'worker woken, job taken (Redis)'],
  ['job-started', 'turn-taken', 'worker: its turn (Redis)'],
  ['turn-taken', 'claimed', 'worker: claim (PostgreSQL, commit)'],
  ['claimed', 'websms-answered', 'worker: WebSMS call (sandbox)'],
  ['websms-answered', 'recorded', 'worker: outcome recorded (PostgreSQL, commit), turn ended (Redis)'],
  // The worker's own 'job-completed' comes after the API has the outcome (BullMQ reports the
  // completion once its reply is read), so the step ends where the API has it.
  ['recorded', 'outcome-received', 'job completed (BullMQ), outcome read by the API (Redis stream)'],
  ['outcome-received', 'answer-sent', 'API: answer written'],
  ['answer-sent', 'answered', 'API → load generator (HTTP)'],
] as const;

export interface PhaseStep {
  step: string;
  p50: number;
  p90: number;
}

export interface PhaseBreakdown {
  /** sends with every phase known */
  sends: number;
  steps: PhaseStep[];
  /** p50 of the whole, load generator to load generator */
  totalP50: number;
}

export interface ClientAnswer {
  sentAt: number;
  answeredAt: number;
  messageId: number;
}

/**
 * Runs `run` with the service's processes `pids` recording each send's phases (send-phases.mjs), and
 * only then: they start once every one of them says it listens, and stop when `run` is done.
 */
export async function recordSendPhases<T>(dir: string, pids: readonly number[], run: () => Promise<T>, timeoutMs = 10_000): Promise<T> {
  writeFileSync(`${dir}/recording`, '');
  try {
    const deadline = Date.now() + timeoutMs;
    while (!pids.every((pid) => existsSync(`${dir}/${pid}.listening`))) {
      if (Date.now() > deadline) throw new Error(`the service's processes did not start recording send phases within ${timeoutMs} ms`);
      await sleep(20);
    }
    return await run();
  } finally {
    rmSync(`${dir}/recording`, { force: true });
  }
}

/** An `onAnswer` for paced() (load.ts) that keeps each answer naming its message. */
export function collectAnswers(answers: ClientAnswer[]) {
  return ({ sentAt, answeredAt, body }: { sentAt: number; answeredAt: number; body: string }) => {
    const id = (JSON.parse(body) as { id?: unknown }).id;
    if (typeof id === 'number') answers.push({ sentAt, answeredAt, messageId: id });
  };
}

/**
 * Joins `answers` with what the service wrote to `dir`, once every one of them is there (or after
 * `timeoutMs`: the processes write every 100 ms). undefined when no send could be joined.
 */
export async function sendPhaseBreakdown(dir: string, answers: readonly ClientAnswer[], timeoutMs = 5_000): Promise<PhaseBreakdown | undefined> {
  const deadline = Date.now() + timeoutMs;
  let joined = join(dir, answers);
  while (joined.length < answers.length && Date.now() < deadline) {
    await sleep(100);
    joined = join(dir, answers);
  }
  if (joined.length === 0) return undefined;
  const steps = STEPS.map(([from, to, step]) => {
    const spans = joined.map((marks) => marks[to]! - marks[from]!);
    return { step, p50: round(percentile(spans, 0.5)), p90: round(percentile(spans, 0.9)) };
  });
  return { sends: joined.length, steps, totalP50: round(percentile(joined.map((marks) => marks.answered! - marks.sent!), 0.5)) };
}

function join(dir: string, answers: readonly ClientAnswer[]): Array<Record<string, number>> {
  const api = new Map<number, Record<string, number>>();
  const worker = new Map<number, Record<string, number>>();
  for (const file of readdirSync(dir).filter((name) => name.endsWith('.jsonl'))) {
    for (const line of readFileSync(`${dir}/${file}`, 'utf8').split('\n')) {
      if (line === '') continue;
      const marks = JSON.parse(line) as Record<string, number>;
      (marks['answer-sent'] === undefined ? worker : api).set(marks.messageId!, marks);
    }
  }
  const joined: Array<Record<string, number>> = [];
  for (const answer of answers) {
    const marks: Record<string, number> = { ...api.get(answer.messageId), ...worker.get(answer.messageId), sent: answer.sentAt, answered: answer.answeredAt };
    if (STEPS.every(([from, to]) => marks[from] !== undefined && marks[to] !== undefined)) joined.push(marks);
  }
  return joined;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}
