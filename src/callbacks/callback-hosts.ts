import { BlockList, isIP } from 'node:net';

// Where callbacks may go (CALLBACK_ALLOWED_HOSTS), checked when a callback_url is accepted and again
// before every delivery. The rule, for operators:
// - A callback_url's host must be one of the listed entries, compared exactly (case-insensitive, a
//   trailing dot ignored, after the URL parser's normalisation, so `http://2130706433/` is 127.0.0.1).
//   An entry may carry a port (`crm.internal:8443`), which then is the only port allowed.
// - A listed IP address (`10.0.0.5`, `[fd00::5]`, `127.0.0.1`) is the operator's explicit choice:
//   callbacks connect to it, whatever range it is in.
// - A listed name is resolved before every delivery and the connection made to the address found. Every
//   address it resolves to must be ordinary unicast: private ranges (10/8, 172.16/12, 192.168/16,
//   100.64/10, fc00::/7) are fine, because the CRM usually is internal; loopback, link-local (with the
//   cloud metadata address 169.254.169.254), unspecified, multicast and reserved addresses are refused,
//   as is a name with any such address among its answers. To reach one of those, list the address.
// - Redirects are never followed.

export interface AllowedHost {
  /** lower case, no trailing dot; an IPv6 address in brackets, as URL.hostname gives it */
  host: string;
  /** undefined: any port */
  port: number | undefined;
}

export const CALLBACK_HOSTS_SETTING = 'CALLBACK_ALLOWED_HOSTS';
export const CALLBACK_URL_MAX_LENGTH = 2048;

const HOST_NAME = /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/;

/** `CALLBACK_ALLOWED_HOSTS="crm.internal, 10.0.0.5:8080, [fd00::5]"`; empty: callbacks off. Throws naming the entry. */
export function parseAllowedHosts(value: string | undefined): AllowedHost[] {
  if (value === undefined) return [];
  return value
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '')
    .map((entry) => {
      // An IPv6 address without a port may be given without brackets.
      const bracketed = isIP(entry) === 6 ? `[${entry}]` : entry;
      const match = /^(\[[0-9A-Fa-f:.]+\]|[^:[\]/?#@*\s]+)(?::(\d{1,5}))?$/.exec(bracketed);
      if (!match) throw new Error(`"${entry}" must be just a host name or IP address, optionally with :port (no scheme, path or wildcard)`);
      let host: string;
      try {
        host = normaliseHost(new URL(`http://${match[1] ?? ''}/`).hostname);
      } catch {
        throw new Error(`"${entry}" is not a host name or an IP address`);
      }
      if (!isIpLiteral(host) && !HOST_NAME.test(host)) throw new Error(`"${entry}" is not a valid host name`);
      const port = match[2] === undefined ? undefined : Number(match[2]);
      if (port !== undefined && (port < 1 || port > 65_535)) throw new Error(`"${entry}": the port must be 1–65535`);
      return { host, port };
    });
}

function normaliseHost(hostname: string): string {
  return hostname.toLowerCase().replace(/\.$/, '');
}

function isIpLiteral(host: string): boolean {
  return isIP(unbracket(host)) !== 0;
}

function unbracket(host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

/** An absolute http(s) URL as a caller may give one: printable ASCII, no credentials, ≤ 2048 characters. */
export function callbackUrlProblem(value: string): string | undefined {
  if (value.length > CALLBACK_URL_MAX_LENGTH) return `must be at most ${CALLBACK_URL_MAX_LENGTH} characters`;
  if (!/^[\x21-\x7E]+$/.test(value)) return 'must be an absolute http or https URL (printable ASCII, no spaces)';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'must be an absolute http or https URL';
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return 'must be an absolute http or https URL';
  if (!/^https?:\/\//i.test(value) || url.hostname === '') return 'must be an absolute http or https URL';
  // The signature authenticates us to the receiver; credentials in the URL would only be stored in clear.
  if (url.username || url.password) return 'must not contain credentials (user:password@)';
  return undefined;
}

export interface CallbackTarget {
  url: URL;
  /** normalised host, as listed */
  host: string;
  port: number;
  /** the host is an IP address: no resolution, no range rule */
  literal: boolean;
}

/** The URL's target when its host (and port) is on the list; undefined otherwise. */
export function allowedTarget(rawUrl: string, allowed: readonly AllowedHost[]): CallbackTarget | undefined {
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  const host = normaliseHost(url.hostname);
  const port = url.port ? Number(url.port) : url.protocol === 'https:' ? 443 : 80;
  const listed = allowed.some((entry) => entry.host === host && (entry.port === undefined || entry.port === port));
  return listed ? { url, host, port, literal: isIpLiteral(host) } : undefined;
}

/** Why a callback_url may not be used, naming the setting; undefined when it may. */
export function callbackHostProblem(rawUrl: string, allowed: readonly AllowedHost[]): string | undefined {
  if (allowed.length === 0) return `callbacks are off: ${CALLBACK_HOSTS_SETTING} is empty`;
  if (allowedTarget(rawUrl, allowed)) return undefined;
  let host = '';
  try {
    host = new URL(rawUrl).host;
  } catch {
    // reported by the URL rule
  }
  return `host ${host} is not in ${CALLBACK_HOSTS_SETTING}`;
}

// Addresses a listed *name* may never resolve to (see the rule above).
const REFUSED_FOR_NAMES = new BlockList();
for (const [network, prefix] of [
  ['0.0.0.0', 8], // "this network", unspecified
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local, cloud metadata
  ['192.0.0.0', 24], // IETF protocol assignments
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const) {
  REFUSED_FOR_NAMES.addSubnet(network, prefix, 'ipv4');
}
for (const [network, prefix] of [
  ['::', 128], // unspecified
  ['::1', 128], // loopback
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
] as const) {
  REFUSED_FOR_NAMES.addSubnet(network, prefix, 'ipv6');
}

/**
 * Whether a listed name may connect to this resolved address. IPv6 forms that embed an IPv4 address
 * (mapped ::ffff:a.b.c.d, NAT64 64:ff9b::a.b.c.d) are judged by that address.
 */
export function addressAllowedForName(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return !REFUSED_FOR_NAMES.check(address, 'ipv4');
  if (family !== 6) return false;
  const embedded = embeddedIpv4(address);
  if (embedded !== undefined) return !REFUSED_FOR_NAMES.check(embedded, 'ipv4');
  return !REFUSED_FOR_NAMES.check(address, 'ipv6');
}

function embeddedIpv4(address: string): string | undefined {
  const lower = address.toLowerCase();
  const dotted = /^(?:::ffff:|64:ff9b::)(\d+\.\d+\.\d+\.\d+)$/.exec(lower);
  if (dotted) return dotted[1];
  const hex = /^(?:::ffff:|64:ff9b::)([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(lower);
  if (!hex) return undefined;
  const high = parseInt(hex[1] ?? '0', 16);
  const low = parseInt(hex[2] ?? '0', 16);
  return `${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`;
}
