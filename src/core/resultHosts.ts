// Where result images may come from. RESULT_HOSTS names hosts (`host[:port]`, `*.domain`); a name
// must also resolve only to public addresses, checked inside the connection's own DNS lookup so the
// address checked is the address connected to (no DNS rebinding between check and connect). An IP
// literal listed in RESULT_HOSTS is an operator's deliberate allowance (the embedded stack's emulator
// on 127.0.0.1:<port>) and is not address-checked; a wildcard never matches an IP literal.
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import { DownloadError } from './errors.ts';

/** Ports a RESULT_HOSTS entry without one allows. */
const DEFAULT_PORTS = new Set(['80', '443']);

export function hostAllowed(url: URL, patterns: string[]): boolean {
  const host = bareHost(url);
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  const literal = isIP(host) !== 0;
  return patterns.some((p) => {
    const [h, pPort] = p.split(/:(?=\d+$)/);
    if (pPort ? pPort !== port : !DEFAULT_PORTS.has(port)) return false;
    if (!h) return false;
    if (h.startsWith('*.')) return !literal && host.endsWith(h.slice(1)) && host.length > h.length - 1;
    return host === h;
  });
}

/** The URL's host without IPv6 brackets, lower case. */
export function bareHost(url: URL): string {
  return url.hostname.toLowerCase().replace(/^\[|\]$/g, '');
}

/** Addresses a result host name must never resolve to: loopback, private, link-local and other non-public ranges. */
const NON_PUBLIC = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8], // "this network"
  ['10.0.0.0', 8], // private
  ['100.64.0.0', 10], // carrier-grade NAT
  ['127.0.0.0', 8], // loopback
  ['169.254.0.0', 16], // link-local (cloud metadata at 169.254.169.254)
  ['172.16.0.0', 12], // private
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.168.0.0', 16], // private
  ['198.18.0.0', 15], // benchmarking
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, broadcast
] as const) {
  NON_PUBLIC.addSubnet(net, bits, 'ipv4');
}
for (const [net, bits] of [
  ['::', 128], // unspecified
  ['::1', 128], // loopback
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['ff00::', 8], // multicast
] as const) {
  NON_PUBLIC.addSubnet(net, bits, 'ipv6');
}

export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return !NON_PUBLIC.check(address, 'ipv4');
  if (family !== 6) return false;
  // IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) addresses reach the IPv4 address inside.
  const embedded = embeddedIPv4(address);
  if (embedded) return isPublicAddress(embedded);
  return !NON_PUBLIC.check(address, 'ipv6');
}

function embeddedIPv4(address: string): string | undefined {
  const lower = address.toLowerCase();
  const prefix = ['::ffff:', '64:ff9b::'].find((p) => lower.startsWith(p));
  if (!prefix) return undefined;
  const rest = lower.slice(prefix.length);
  if (isIP(rest) === 4) return rest;
  const m = /^([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(rest);
  if (!m) return undefined;
  const hi = parseInt(m[1]!, 16);
  const lo = parseInt(m[2]!, 16);
  return [hi >> 8, hi & 255, lo >> 8, lo & 255].join('.');
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/**
 * A `lookup` for http(s).request: resolves the name and refuses it when any address it resolves to
 * is not public. The socket connects to the address returned here, so nothing can re-resolve the
 * name to another address between the check and the connection.
 */
export function publicOnlyLookup(hostname: string, options: LookupOptions, callback: LookupCallback): void {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
    if (err) return callback(err, '');
    const refused = addresses.find((a) => !isPublicAddress(a.address));
    if (refused || !addresses.length) {
      const why = refused ? `it resolves to ${refused.address}, which is not a public address` : 'it resolves to no address';
      return callback(new DownloadError(`refusing to download from ${hostname}: ${why} (list an IP address in RESULT_HOSTS to allow a private host on purpose)`, true), '');
    }
    if (options.all) callback(null, addresses);
    else callback(null, addresses[0]!.address, addresses[0]!.family);
  });
}
