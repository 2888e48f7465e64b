// Which addresses fal's servers can reach: not loopback, private, link-local or other non-public
// ranges. The product asks it of WEBHOOK_PUBLIC_URL, FAL_QUEUE_URL and S3_ENDPOINT (by name, at
// start); the emulator asks it of every URL it fetches or posts to (privateNetwork: false).
import { BlockList, isIP } from 'node:net';

const NOT_PUBLIC = new BlockList();
for (const [net, bits] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  NOT_PUBLIC.addSubnet(net, bits, 'ipv4');
}
for (const [net, bits] of [
  ['::', 128],
  ['::1', 128],
  ['fc00::', 7],
  ['fe80::', 10],
  ['ff00::', 8],
] as const) {
  NOT_PUBLIC.addSubnet(net, bits, 'ipv6');
}

/** True for an IP address fal could not reach (IPv4-mapped IPv6 addresses are checked as IPv4). */
export function isPrivateAddress(address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
  if (mapped) return isPrivateAddress(mapped);
  const family = isIP(address);
  if (family === 0) return false;
  return NOT_PUBLIC.check(address, family === 4 ? 'ipv4' : 'ipv6');
}

/** True when the URL's host is this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackUrl(url: string): boolean {
  let host: string;
  try {
    host = new URL(url).hostname.replace(/^\[|\]$/g, '').toLowerCase();
  } catch {
    return false;
  }
  if (host === 'localhost' || host.endsWith('.localhost')) return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(host)?.[1] ?? host;
  return mapped === '::1' || (isIP(mapped) === 4 && mapped.startsWith('127.'));
}

/** Names that only mean something inside one machine or network. */
const LOCAL_SUFFIXES = ['.localhost', '.local', '.internal', '.lan', '.home.arpa', '.intranet', '.corp'];

/**
 * Why fal's servers could not reach this URL's host, judged from the URL alone (no DNS lookup, so it
 * can be decided while reading the configuration): a loopback/private/link-local address, `localhost`,
 * a local-only suffix, or a single-label name such as a compose service (`minio`). Undefined when the
 * host looks public.
 */
export function privateHostReason(url: string): string | undefined {
  let host: string;
  try {
    host = new URL(url).hostname.replace(/^\[|\]$/g, '').toLowerCase();
  } catch {
    return 'not a valid URL';
  }
  if (isIP(host)) return isPrivateAddress(host) ? `${host} is a loopback, private or link-local address` : undefined;
  if (host === 'localhost') return 'localhost is this machine';
  const suffix = LOCAL_SUFFIXES.find((s) => host.endsWith(s));
  if (suffix) return `${host} is a local name (${suffix})`;
  if (!host.includes('.')) return `${host} is a single-label name (only resolvable inside its own network)`;
  return undefined;
}
