// Fetches a result image safely: only from allowed hosts (every redirect hop re-checked), only
// http(s) or a data: URI, only image content types, never more than maxBytes.
import { Readable, Transform } from 'node:stream';
import { DownloadError } from '../core/errors.ts';

export interface DownloadPolicy {
  /** host or host:port patterns; `*.example.com` matches subdomains. */
  allowedHosts: string[];
  maxBytes: number;
  timeoutMs: number;
}

export interface OpenedImage {
  body: Readable;
  contentType: string;
}

const MAX_REDIRECTS = 5;

export function hostAllowed(url: URL, patterns: string[]): boolean {
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, '');
  const port = url.port || (url.protocol === 'https:' ? '443' : '80');
  return patterns.some((p) => {
    const [h, pPort] = p.split(/:(?=\d+$)/);
    if (pPort && pPort !== port) return false;
    if (!h) return false;
    return h.startsWith('*.') ? host.endsWith(h.slice(1)) && host.length > h.length - 1 : host === h;
  });
}

export async function openImage(url: string, policy: DownloadPolicy): Promise<OpenedImage> {
  if (url.startsWith('data:')) return decodeDataUri(url, policy.maxBytes);
  let current = url;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    let parsed: URL;
    try {
      parsed = new URL(current);
    } catch {
      throw new DownloadError(`not a URL: ${current.slice(0, 100)}`, true);
    }
    if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new DownloadError(`refusing ${parsed.protocol} URL ${parsed.href}`, true);
    if (!hostAllowed(parsed, policy.allowedHosts)) {
      throw new DownloadError(`refusing to download from ${parsed.host}: not in RESULT_HOSTS (${policy.allowedHosts.join(',')})`, true);
    }
    let res: Response;
    try {
      res = await fetch(parsed, { redirect: 'manual', signal: AbortSignal.timeout(policy.timeoutMs) });
    } catch (err) {
      throw new DownloadError(`download of ${parsed.href} failed: ${(err as Error).message}`, false);
    }
    if (res.status >= 300 && res.status < 400) {
      const location = res.headers.get('location');
      await res.body?.cancel();
      if (!location) throw new DownloadError(`redirect without Location from ${parsed.href}`, true);
      current = new URL(location, parsed).href;
      continue;
    }
    if (!res.ok || !res.body) {
      await res.body?.cancel();
      const permanent = res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429;
      throw new DownloadError(`download of ${parsed.href} answered ${res.status}`, permanent);
    }
    const contentType = (res.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase();
    if (!contentType.startsWith('image/')) {
      await res.body.cancel();
      throw new DownloadError(`${parsed.href} is ${contentType || 'of no content type'}, not an image`, true);
    }
    const declared = Number(res.headers.get('content-length') ?? NaN);
    if (declared > policy.maxBytes) {
      await res.body.cancel();
      throw new DownloadError(`${parsed.href} is ${declared} bytes, over the ${policy.maxBytes}-byte limit`, true);
    }
    const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream).pipe(limitBytes(policy.maxBytes, parsed.href));
    return { body, contentType };
  }
  throw new DownloadError(`more than ${MAX_REDIRECTS} redirects from ${url}`, true);
}

function decodeDataUri(uri: string, maxBytes: number): OpenedImage {
  const comma = uri.indexOf(',');
  const header = /^data:(image\/[a-z0-9.+-]+)(?:;[a-z0-9=.+-]+)*;base64$/i.exec(comma > 0 ? uri.slice(0, comma) : '');
  if (!header) throw new DownloadError('result is a data: URI that is not a base64 image', true);
  const buf = Buffer.from(uri.slice(comma + 1), 'base64');
  if (buf.length > maxBytes) throw new DownloadError(`inline image is ${buf.length} bytes, over the ${maxBytes}-byte limit`, true);
  return { body: Readable.from([buf]), contentType: header[1]!.toLowerCase() };
}

function limitBytes(max: number, what: string): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      seen += chunk.length;
      if (seen > max) cb(new DownloadError(`${what} exceeded the ${max}-byte limit`, true));
      else cb(null, chunk);
    },
  });
}
