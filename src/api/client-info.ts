import { isIP } from 'node:net';
import type { Request } from 'express';
import type { Caller } from '../messages/accept.ts';

const truncate = (value: string | undefined, max: number) => (value ? value.slice(0, max) : null);

/**
 * Who is calling. The address is the peer's, unless the peer is a trusted proxy (Express's
 * "trust proxy"): then X-Real-IP (set by the documented nginx location) or X-Forwarded-For.
 */
export function callerOf(req: Request): Caller {
  return {
    serviceName: printable(truncate(req.get('x-service-name'), 50)),
    requestIp: clientIp(req),
    userAgent: printable(truncate(req.get('user-agent'), 255)),
  };
}

function clientIp(req: Request): string | null {
  const peer = req.socket.remoteAddress;
  const trust = req.app.get('trust proxy fn') as ((address: string, hop: number) => boolean) | undefined;
  const realIp = req.get('x-real-ip')?.trim();
  if (peer && realIp && isIP(realIp) && trust?.(peer, 0)) return realIp;
  // A trusted proxy's garbage X-Forwarded-For must not erase what we do know: the peer.
  if (req.ip && isIP(req.ip)) return req.ip;
  return peer && isIP(peer) ? peer : null;
}

function printable(value: string | null): string | null {
  return value === null ? null : value.replace(/[\u0000-\u001F\u007F]/g, '') || null;
}
