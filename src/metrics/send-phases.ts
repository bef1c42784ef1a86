import { channel } from 'node:diagnostics_channel';

// Where one send is, moment by moment, for whoever listens: `npm run bench` preloads a listener into
// the service's processes (test/bench/send-phases.mjs) and reports where an idle send's milliseconds
// go, hop by hop. Nobody listens in a deployment, and then a phase costs one property read.
//
// A phase names the message by id once it has one; before that, the API names the request by its
// SendCommand (the same object from validation to answer), and links it to the HTTP request once.

const phases = channel('user-sms:send-phase');

export type SendPhase =
  /** API: the request is valid; `request` is the HTTP request, `command` what was made of it */
  | 'validated'
  | 'enterprise-read'
  /** API: the row is stored (`messageId` known from here) */
  | 'admitted'
  | 'enqueued'
  /** API: the worker's outcome arrived */
  | 'outcome-received'
  /** worker: the job is running */
  | 'job-started'
  | 'turn-taken'
  | 'claimed'
  | 'websms-answered'
  /** worker: the outcome is recorded and the turn ended */
  | 'recorded'
  | 'job-completed';

export interface SendPhaseEvent {
  phase: SendPhase;
  messageId?: number;
  command?: object;
  request?: object;
}

export function sendPhase(event: SendPhaseEvent): void {
  if (phases.hasSubscribers) phases.publish(event);
}
