import type { Logger } from '../logger.ts';
import type { MessageSnapshot } from './callback-repository.ts';
import { emitMessageEvent, emitMessageEvents, type CallbackEmitPorts, type MessageEventType } from './emit-message-event.ts';

// Raising the events of send outcomes off the send path. A send job completes, and its caller gets
// its answer, as soon as the outcome is recorded; the outcome's event is raised just after, together
// with those of the sends that finished at about the same time (one statement for all of them).
// Nothing is lost if that never happens (the process dies, PostgreSQL refuses): the statement that
// recorded the outcome also left the event owed (callback_owed), and the callback sweeper raises what
// is still owed after its grace period.

export interface EventRaiser {
  /**
   * Raises `type` for the message soon. `changed`: the message as the recording left it (null: it has
   * no callback_url, so nothing to raise); undefined: read it when raising.
   */
  raise(messageId: number, type: MessageEventType, changed?: MessageSnapshot | null): void;
  /** Raises what is waiting, and waits for it. */
  flush(): Promise<void>;
}

/** Outcomes that finish this close together are raised in one statement. */
const RAISE_DELAY_MS = 5;

export function createEventRaiser(ports: CallbackEmitPorts, logger: Logger, delayMs = RAISE_DELAY_MS): EventRaiser {
  let described: Array<{ type: MessageEventType; message: MessageSnapshot }> = [];
  let unread: Array<{ messageId: number; type: MessageEventType }> = [];
  let timer: NodeJS.Timeout | undefined;
  const raising = new Set<Promise<void>>();

  const failed = (events: number) => (error: unknown) =>
    logger.warn({ events, err: error instanceof Error ? error.message : String(error) }, 'callback events not raised now; they stay owed and the callback sweeper raises them');

  function raiseWaiting(): Promise<void> {
    clearTimeout(timer);
    timer = undefined;
    const batch = described;
    const reads = unread;
    described = [];
    unread = [];
    const work = (async () => {
      // At most one event per message and statement: a message's second event waits for the next.
      for (let rest = batch; rest.length > 0; ) {
        const seen = new Set<number>();
        const now = rest.filter((c) => !seen.has(c.message.id) && seen.add(c.message.id));
        rest = rest.filter((c) => !now.includes(c));
        await emitMessageEvents(ports, now).catch(failed(now.length));
      }
      for (const { messageId, type } of reads) await emitMessageEvent(ports, messageId, type).catch(failed(1));
    })();
    raising.add(work);
    void work.finally(() => raising.delete(work));
    return work;
  }

  return {
    raise(messageId, type, changed) {
      if (changed === null) return;
      if (changed === undefined) unread.push({ messageId, type });
      else described.push({ type, message: changed });
      timer ??= setTimeout(() => void raiseWaiting(), delayMs);
    },
    async flush() {
      if (described.length > 0 || unread.length > 0) void raiseWaiting();
      await Promise.all(raising);
    },
  };
}
