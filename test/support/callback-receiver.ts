import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Webhook } from 'standardwebhooks';

// A real callback receiver on 127.0.0.1 that verifies every request with the Standard Webhooks
// library's own verify, and answers as each test scripts it.

export type Behaviour = 'ok' | 'fail500' | 'redirect' | 'hang' | 'reset' | 'unavailable';

export interface Received {
  path: string;
  headers: Record<string, string>;
  body: string;
  at: number;
  /** what the receiver did with it */
  answered: Behaviour;
  verified: boolean;
}

/** A callback receiver: per path, a script of behaviours for the first requests, then `ok` (or `always`). */
export class Receiver {
  readonly received: Received[] = [];
  private readonly scripts = new Map<string, Behaviour[]>();
  private readonly always = new Map<string, Behaviour>();
  private server: Server | undefined;
  port = 0;

  private readonly secret: string;

  constructor(secret: string) {
    this.secret = secret;
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => this.handle(req, res));
    await new Promise<void>((resolve) => this.server?.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
  }

  url(path: string): string {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  script(path: string, behaviours: Behaviour[]): void {
    this.scripts.set(path, [...behaviours]);
  }

  setAlways(path: string, behaviour: Behaviour | undefined): void {
    if (behaviour) this.always.set(path, behaviour);
    else this.always.delete(path);
  }

  at(path: string): Received[] {
    return this.received.filter((r) => r.path === path);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const path = req.url ?? '';
      const behaviour = this.always.get(path) ?? this.scripts.get(path)?.shift() ?? 'ok';
      const headers = Object.fromEntries(Object.entries(req.headers).map(([k, v]) => [k, String(v)]));
      let verified = false;
      try {
        new Webhook(this.secret).verify(body, headers);
        verified = true;
      } catch {
        verified = false;
      }
      this.received.push({ path, headers, body, at: Date.now(), answered: behaviour, verified });
      switch (behaviour) {
        case 'ok':
          res.writeHead(204).end();
          break;
        case 'fail500':
          res.writeHead(500).end('boom');
          break;
        case 'unavailable':
          res.writeHead(503).end();
          break;
        case 'redirect':
          res.writeHead(302, { location: this.url('/redirected-to') }).end();
          break;
        case 'hang':
          break; // never answers; the sender times out
        case 'reset':
          req.socket.resetAndDestroy();
          break;
      }
    });
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

