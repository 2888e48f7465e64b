// Fetches a result image safely: http(s) only from RESULT_HOSTS at addresses that may be reached
// (every redirect hop re-checked, see resultHosts.ts), or a data: URI; only PNG, JPEG or WEBP by
// their first bytes; never more than maxBytes; the whole download within timeoutMs. Every failure is
// a DownloadError saying whether trying again can help, and no error is ever emitted on a stream
// nobody listens to (an unhandled one takes the whole worker process down).
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { Readable } from 'node:stream';
import { DownloadError, errorMessage } from './errors.ts';
import { contentTypeOf, notAnImage, sniffImageFormat, SNIFF_BYTES, type ImageFormat } from './imageType.ts';
import { bareHost, hostAllowed, isPublicAddress, publicOnlyLookup } from './resultHosts.ts';

export { hostAllowed } from './resultHosts.ts';

export interface DownloadPolicy {
  /** host or host:port patterns; `*.example.com` matches subdomains. */
  allowedHosts: string[];
  /**
   * Any host instead, as long as it is at a public address: a name must resolve only to public
   * addresses (checked in the connection's lookup), an IP literal must be one (the dashboard's face
   * thumbnails, preflight: a manifest's face may name any host, never this machine or its network).
   * allowedHosts then lists IP addresses allowed although they are private.
   */
  anyPublicHost?: boolean;
  maxBytes: number;
  timeoutMs: number;
  /**
   * Ask for only this many first bytes (a ranged GET: preflight reads a face's header, not the face).
   * A server that ignores the range sends the whole body; the reader stops when it has what it needs.
   */
  firstBytes?: number;
  /** Judge the body by its first bytes only, whatever type the server claims (faces: buckets often say application/octet-stream). */
  bytesOnly?: boolean;
  /** The variable maxBytes comes from, named in refusals (default MAX_IMAGE_BYTES). */
  maxBytesName?: string;
}

export interface OpenedImage {
  body: Readable;
  /** The real format, from the first bytes (whatever the server or the data: URI claimed). */
  format: ImageFormat;
  contentType: string;
  /** The whole file's size when the server said it (Content-Length, or the total of a Content-Range). */
  size?: number;
}

/** The server answered, with something that is not a PNG, JPEG or WEBP image (by its claimed type or its first bytes). */
export class NotAnImageError extends DownloadError {
  override name = 'NotAnImageError';
  constructor(message: string) {
    super(message, true);
  }
}

const MAX_REDIRECTS = 5;

/** One download's time limit, covering every hop and the whole body. */
class Deadline {
  expired = false;
  request?: ClientRequest;
  private readonly timer: NodeJS.Timeout;

  constructor(readonly ms: number) {
    this.timer = setTimeout(() => {
      this.expired = true;
      this.request?.destroy();
    }, ms);
    this.timer.unref();
  }

  clear(): void {
    clearTimeout(this.timer);
  }

  /** Any failure as a DownloadError; a stalled server is worth another try. */
  explain(err: unknown, href: string): DownloadError {
    if (err instanceof DownloadError) return err;
    if (this.expired) return new DownloadError(`download of ${href} did not finish within DOWNLOAD_TIMEOUT_MS (${this.ms} ms)`, false);
    return new DownloadError(`download of ${href} failed: ${errorMessage(err)}`, false);
  }
}

export async function openImage(url: string, policy: DownloadPolicy): Promise<OpenedImage> {
  if (url.startsWith('data:')) return decodeDataUri(url, policy.maxBytes, policy.maxBytesName);
  const deadline = new Deadline(policy.timeoutMs);
  let href = url;
  try {
    let res: IncomingMessage;
    for (let hop = 0; ; hop++) {
      if (hop > MAX_REDIRECTS) throw new DownloadError(`more than ${MAX_REDIRECTS} redirects from ${url}`, true);
      const target = checkedUrl(href, policy);
      href = target.href;
      res = await get(target, deadline, policy.firstBytes);
      const status = res.statusCode ?? 0;
      if (status < 300 || status >= 400) break;
      const location = res.headers.location;
      res.destroy();
      if (!location) throw new DownloadError(`redirect without Location from ${href}`, true);
      href = new URL(location, target).href;
    }
    return await readImage(res, href, policy, deadline);
  } catch (err) {
    deadline.clear();
    throw deadline.explain(err, href);
  }
}

/** Parses one hop's URL and checks its scheme and host against RESULT_HOSTS (or, for anyPublicHost, an IP literal's address). */
function checkedUrl(href: string, policy: DownloadPolicy): URL {
  const allowedHosts = policy.allowedHosts;
  let url: URL;
  try {
    url = new URL(href);
  } catch {
    throw new DownloadError(`not a URL: ${href.slice(0, 100)}`, true);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new DownloadError(`refusing ${url.protocol} URL ${url.href}`, true);
  if (policy.anyPublicHost) {
    const host = bareHost(url);
    // An IP address:port in allowedHosts is the operator's deliberate allowance (PREFLIGHT_PRIVATE_HOSTS);
    // a name listed there is still resolved and checked like any other.
    if (isIP(host) !== 0 && !isPublicAddress(host) && !hostAllowed(url, allowedHosts)) throw new DownloadError(`refusing to download from ${url.host}: ${host} is not a public address`, true);
    return url;
  }
  if (!hostAllowed(url, allowedHosts)) {
    throw new DownloadError(`refusing to download from ${url.host}: not in RESULT_HOSTS (${allowedHosts.join(',')}; an entry without a port allows 80 and 443)`, true);
  }
  return url;
}

/** One GET. A name is resolved by publicOnlyLookup, and the socket connects to the address it checked. */
function get(url: URL, deadline: Deadline, firstBytes?: number): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const literal = isIP(bareHost(url)) !== 0;
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    // agent: false: a fresh connection per download, never a pooled socket resolved for something else.
    const headers: Record<string, string> = { accept: 'image/png, image/jpeg, image/webp' };
    if (firstBytes) headers.range = `bytes=0-${firstBytes - 1}`;
    const req = send(url, { agent: false, lookup: literal ? undefined : publicOnlyLookup, headers }, resolve);
    deadline.request = req;
    // Stays attached: once the response has arrived, its body stream reports what goes wrong.
    req.on('error', reject);
    req.end();
  });
}

async function readImage(res: IncomingMessage, href: string, policy: DownloadPolicy, deadline: Deadline): Promise<OpenedImage> {
  const { maxBytes, maxBytesName: limit = 'MAX_IMAGE_BYTES' } = policy;
  const status = res.statusCode ?? 0;
  if (status < 200 || status >= 300) {
    res.destroy();
    const permanent = status >= 400 && status < 500 && status !== 408 && status !== 429;
    throw new DownloadError(`download of ${href} answered ${status}`, permanent, undefined, status);
  }
  const claimed = String(res.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  const refusal = policy.bytesOnly ? undefined : claimedTypeRefusal(href, claimed);
  if (refusal) {
    res.destroy();
    throw new NotAnImageError(refusal);
  }
  // A ranged answer (206) says the whole file's size after the slash of its Content-Range.
  const ranged = status === 206 ? /\/(\d+)\s*$/.exec(String(res.headers['content-range'] ?? ''))?.[1] : undefined;
  const declared = Number(status === 206 ? (ranged ?? NaN) : (res.headers['content-length'] ?? NaN));
  if (declared > maxBytes) {
    res.destroy();
    throw new DownloadError(`${href} is ${declared} bytes, over the ${maxBytes}-byte limit (${limit})`, true);
  }
  const chunks = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const count = byteCounter(maxBytes, href, limit);
  // The first bytes say what the body really is, before anything of it is stored.
  const head: Buffer[] = [];
  try {
    for (let n = 0; n < SNIFF_BYTES; ) {
      const next = await chunks.next();
      if (next.done) break;
      count(next.value);
      head.push(next.value);
      n += next.value.length;
    }
  } catch (err) {
    await chunks.return?.();
    throw err;
  }
  const first = Buffer.concat(head);
  const format = sniffImageFormat(first);
  if (!format) {
    await chunks.return?.();
    throw new NotAnImageError(notAnImage(href, claimed, first.subarray(0, 16)));
  }
  async function* rest(): AsyncGenerator<Buffer> {
    try {
      yield* head;
      for (;;) {
        const next = await chunks.next();
        if (next.done) return;
        count(next.value);
        yield next.value;
      }
    } catch (err) {
      throw deadline.explain(err, href);
    } finally {
      deadline.clear();
      await chunks.return?.();
    }
  }
  const body = Readable.from(rest(), { objectMode: false });
  // A reader that stops early destroys the body while rest() may be waiting for the server's next chunk;
  // the generator can only be ended once that wait is over, so the response is let go of first.
  const endIterable = body._destroy.bind(body);
  body._destroy = (err, cb) => {
    res.destroy();
    endIterable(err, cb);
  };
  return { body, format, contentType: contentTypeOf(format), ...(Number.isFinite(declared) ? { size: declared } : {}) };
}

/** Why a claimed content type is refused before any byte is read, or undefined. */
function claimedTypeRefusal(what: string, claimed: string): string | undefined {
  if (!claimed.startsWith('image/')) return `${what} is ${claimed || 'of no content type'}, not an image`;
  if (claimed.startsWith('image/svg')) return `${what} is an SVG image: SVG is never accepted (only PNG, JPEG and WEBP)`;
  return undefined;
}

function decodeDataUri(uri: string, maxBytes: number, limit = 'MAX_IMAGE_BYTES'): OpenedImage {
  const comma = uri.indexOf(',');
  const header = /^data:(image\/[a-z0-9.+-]+)(?:;[a-z0-9=.+-]+)*;base64$/i.exec(comma > 0 ? uri.slice(0, comma) : '');
  if (!header) throw new DownloadError('result is a data: URI that is not a base64 image', true);
  const claimed = header[1]!.toLowerCase();
  const refusal = claimedTypeRefusal('the inline (data: URI) image', claimed);
  if (refusal) throw new NotAnImageError(refusal);
  const buf = Buffer.from(uri.slice(comma + 1), 'base64');
  if (buf.length > maxBytes) throw new DownloadError(`inline image is ${buf.length} bytes, over the ${maxBytes}-byte limit (${limit})`, true);
  const format = sniffImageFormat(buf);
  if (!format) throw new NotAnImageError(notAnImage('the inline (data: URI) image', claimed, buf.subarray(0, 16)));
  return { body: Readable.from([buf], { objectMode: false }), format, contentType: contentTypeOf(format) };
}

function byteCounter(max: number, what: string, limit: string): (chunk: Buffer) => void {
  let seen = 0;
  return (chunk) => {
    seen += chunk.length;
    if (seen > max) throw new DownloadError(`${what} exceeded the ${max}-byte limit (${limit})`, true);
  };
}
