import net from 'node:net';

// A TCP proxy a test puts between the service and a server it must not touch (the machine's shared
// PostgreSQL or Redis, which CI also uses): the outage happens in the proxy, the server never notices.
//
//   open        — bytes flow both ways
//   down        — every connection is reset and new ones are reset on arrival: the server went away
//   stall       — connections stay up but no byte passes either way, new ones are accepted and held:
//                 a network that drops packets. open() resumes them, as TCP would once it is back.
//   holdReplies — requests reach the server, its answers are held (one-way loss, or a server whose
//                 answers come too late): the server acts on a command whose client times out.
//
// holdRepliesAfter(marker) does the same to one connection at one moment: the first one whose request
// bytes contain the marker (a statement's text) has every answer from then on held, while the others
// go on: the answer to that very statement is lost. connectionSending(marker) hands the test that
// connection, to reset when it chooses.

export type ProxyMode = 'open' | 'down' | 'stall' | 'holdReplies';

export interface TcpProxy {
  readonly port: number;
  readonly mode: ProxyMode;
  /** Client connections currently open through the proxy. */
  connections(): number;
  open(): void;
  down(): void;
  stall(): void;
  holdReplies(): void;
  /**
   * The first connection to send `marker` from now on (and then `then`, when given) has its answers
   * held until it closes; resolves when that happens.
   */
  holdRepliesAfter(marker: string, options?: { then?: string }): Promise<void>;
  /**
   * The first connection to send `marker` from now on, once it has; reset() resets it both ways (a
   * statement the server is running goes on until it next reads or writes the connection).
   */
  connectionSending(marker: string): Promise<{ reset(): void }>;
  /** Stops listening and resets every connection. */
  close(): Promise<void>;
}

interface Pair {
  client: net.Socket;
  upstream: net.Socket | undefined;
  /** client → server bytes are being forwarded */
  requestsFlow: boolean;
  /** server → client bytes are being forwarded */
  repliesFlow: boolean;
  /** its answers are held whatever the mode (holdRepliesAfter) */
  held: boolean;
  closed: boolean;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  let mode: ProxyMode = 'open';
  const pairs = new Set<Pair>();

  /** Ends both sides; `abort` resets them (RST) instead of closing them normally. */
  const end = (pair: Pair, abort: boolean) => {
    if (pair.closed) return;
    pair.closed = true;
    pairs.delete(pair);
    for (const socket of [pair.client, pair.upstream]) {
      if (!socket || socket.destroyed) continue;
      if (abort && !socket.connecting) socket.resetAndDestroy();
      else socket.destroy();
    }
  };

  const direction = (from: net.Socket, to: net.Socket, flow: boolean, flowing: boolean): boolean => {
    if (flow && !flowing) {
      from.pipe(to);
      from.resume();
    } else if (!flow && flowing) {
      from.unpipe(to);
      from.pause();
    }
    return flow;
  };

  /** Brings one connection in line with the current mode. */
  const apply = (pair: Pair) => {
    if (pair.closed) return;
    const requests = mode === 'open' || mode === 'holdReplies';
    const replies = mode === 'open' && !pair.held;
    if (!requests && !pair.upstream) {
      pair.client.pause();
      return;
    }
    if (!pair.upstream) {
      const upstream = net.connect(target);
      pair.upstream = upstream;
      upstream.on('error', () => end(pair, true));
      upstream.on('close', () => end(pair, false));
    }
    pair.requestsFlow = direction(pair.client, pair.upstream, requests, pair.requestsFlow);
    pair.repliesFlow = direction(pair.upstream, pair.client, replies, pair.repliesFlow);
  };

  const server = net.createServer((client) => {
    const pair: Pair = { client, upstream: undefined, requestsFlow: false, repliesFlow: false, held: false, closed: false };
    client.on('error', () => end(pair, true));
    client.on('close', () => end(pair, false));
    if (mode === 'down') {
      end(pair, true);
      return;
    }
    pairs.add(pair);
    apply(pair);
    watch?.(pair);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;

  /** Looks at the requests of a connection for holdRepliesAfter's marker; armed while one is awaited. */
  let watch: ((pair: Pair) => void) | undefined;

  /** Resolves with the first connection to send `marker` (and then `then`) from now on. */
  const firstSending = (marker: string, options: { then?: string } = {}) =>
    new Promise<Pair>((resolve) => {
      const watched = new Map<Pair, (chunk: Buffer) => void>();
      const disarm = () => {
        watch = undefined;
        for (const [pair, listener] of watched) pair.client.off('data', listener);
        watched.clear();
      };
      watch = (pair) => {
        // Stages still to be seen on this connection: the marker, then `then`.
        const stages = [marker, ...(options.then === undefined ? [] : [options.then])].map((text) => Buffer.from(text));
        const listener = (chunk: Buffer) => {
          // Forwarded already (the pipe's listener comes first): its answer cannot have come back yet.
          while (stages.length > 0 && chunk.includes(stages[0]!)) stages.shift();
          if (stages.length > 0) return;
          disarm();
          resolve(pair);
        };
        watched.set(pair, listener);
        pair.client.on('data', listener);
      };
      for (const pair of pairs) watch(pair);
    });

  const holdRepliesAfter = async (marker: string, options: { then?: string } = {}) => {
    const pair = await firstSending(marker, options);
    pair.held = true;
    apply(pair);
  };

  const connectionSending = async (marker: string) => {
    const pair = await firstSending(marker);
    return { reset: () => end(pair, true) };
  };

  const switchTo = (next: ProxyMode) => {
    mode = next;
    for (const pair of [...pairs]) {
      if (next === 'down') end(pair, true);
      else apply(pair);
    }
  };

  return {
    port,
    get mode() {
      return mode;
    },
    connections: () => pairs.size,
    open: () => switchTo('open'),
    down: () => switchTo('down'),
    stall: () => switchTo('stall'),
    holdReplies: () => switchTo('holdReplies'),
    holdRepliesAfter,
    connectionSending,
    close() {
      switchTo('down');
      return new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
