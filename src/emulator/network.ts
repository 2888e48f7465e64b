// What fal's servers cannot reach: loopback, private, link-local and other non-public addresses.
// With `privateNetwork: false` the emulator refuses, like fal, to fetch faces from them or to post
// webhooks to them (the one exception is its own /files, which stands for fal's public CDN).
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { isPrivateAddress } from '../core/publicAddress.ts';

/**
 * Why fal could not reach this http(s) URL, or undefined when it could: the host is a private
 * address, `localhost`, or a name that resolves to a private address.
 */
export async function unreachableFromFal(url: string): Promise<string | undefined> {
  let host: string;
  try {
    host = new URL(url).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return 'not a valid URL';
  }
  if (host === 'localhost' || host.endsWith('.localhost')) return `${host} is a local name`;
  if (isIP(host)) return isPrivateAddress(host) ? `${host} is a private or loopback address` : undefined;
  try {
    const addresses = await lookup(host, { all: true });
    const bad = addresses.find((a) => isPrivateAddress(a.address));
    return bad ? `${host} resolves to the private address ${bad.address}` : undefined;
  } catch (err) {
    return `${host} does not resolve (${(err as { code?: string }).code ?? (err as Error).message})`;
  }
}
