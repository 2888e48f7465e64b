// Fetches a result image safely: http(s) only from RESULT_HOSTS at addresses that may be reached
// (every redirect hop re-checked, see resultHosts.ts), or a data: URI; only PNG, JPEG or WEBP by
// their first bytes; never more than maxBytes; the whole download within timeoutMs. Every failure is
// a DownloadError saying whether trying again can help, and no error is ever emitted on a stream
// nobody listens to (an unhandled one takes the whole worker process down).
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { isIP } from 'node:net';
import { Readable } from 'node:stream';
import { DownloadError, errorMessage } from '../core/errors.ts';
import { contentTypeOf, notAnImage, sniffImageFormat, SNIFF_BYTES, type ImageFormat } from './imageType.ts';
import { bareHost, hostAllowed, isPublicAddress, publicOnlyLookup } from './resultHosts.ts';

export { hostAllowed } from './resultHosts.ts';

export interface DownloadPolicy {
  /** host or host:port patterns; `*.example.com` matches subdomains. */
  allowedHosts: string[];
  /**
   * Any host instead, as long as it is at a public address: a name must resolve only to public
   * addresses (checked in the connection's lookup), an IP literal must be one (the dashboard's face
   * thumbnails: a manifest's face may name any host, never this machine or its network).
   */
  anyPublicHost?: boolean;
  maxBytes: number;
  timeoutMs: number;
}

export interface OpenedImage {
  body: Readable;
  /** The real format, from the first bytes (whatever the server or the data: URI claimed). */
  format: ImageFormat;
  contentType: string;
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
  if (url.startsWith('data:')) return decodeDataUri(url, policy.maxBytes);
  const deadline = new Deadline(policy.timeoutMs);
  let href = url;
  try {
    let res: IncomingMessage;
    for (let hop = 0; ; hop++) {
      if (hop > MAX_REDIRECTS) throw new DownloadError(`more than ${MAX_REDIRECTS} redirects from ${url}`, true);
      const target = checkedUrl(href, policy);
      href = target.href;
      res = await get(target, deadline);
      const status = res.statusCode ?? 0;
      if (status < 300 || status >= 400) break;
      const location = res.headers.location;
      res.destroy();
      if (!location) throw new DownloadError(`redirect without Location from ${href}`, true);
      href = new URL(location, target).href;
    }
    return await readImage(res, href, policy.maxBytes, deadline);
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
    if (isIP(host) !== 0 && !isPublicAddress(host)) throw new DownloadError(`refusing to download from ${url.host}: ${host} is not a public address`, true);
    return url;
  }
  if (!hostAllowed(url, allowedHosts)) {
    throw new DownloadError(`refusing to download from ${url.host}: not in RESULT_HOSTS (${allowedHosts.join(',')}; an entry without a port allows 80 and 443)`, true);
  }
  return url;
}

/** One GET. A name is resolved by publicOnlyLookup, and the socket connects to the address it checked. */
function get(url: URL, deadline: Deadline): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const literal = isIP(bareHost(url)) !== 0;
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    // agent: false: a fresh connection per download, never a pooled socket resolved for something else.
    const req = send(url, { agent: false, lookup: literal ? undefined : publicOnlyLookup, headers: { accept: 'image/png, image/jpeg, image/webp' } }, resolve);
    deadline.request = req;
    // Stays attached: once the response has arrived, its body stream reports what goes wrong.
    req.on('error', reject);
    req.end();
  });
}

async function readImage(res: IncomingMessage, href: string, maxBytes: number, deadline: Deadline): Promise<OpenedImage> {
  const status = res.statusCode ?? 0;
  if (status < 200 || status >= 300) {
    res.destroy();
    const permanent = status >= 400 && status < 500 && status !== 408 && status !== 429;
    throw new DownloadError(`download of ${href} answered ${status}`, permanent, undefined, status);
  }
  const claimed = String(res.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  const refusal = claimedTypeRefusal(href, claimed);
  if (refusal) {
    res.destroy();
    throw new DownloadError(refusal, true);
  }
  const declared = Number(res.headers['content-length'] ?? NaN);
  if (declared > maxBytes) {
    res.destroy();
    throw new DownloadError(`${href} is ${declared} bytes, over the ${maxBytes}-byte limit (MAX_IMAGE_BYTES)`, true);
  }
  const chunks = res[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const count = byteCounter(maxBytes, href);
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
    throw new DownloadError(notAnImage(href, claimed, first.subarray(0, 16)), true);
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
  return { body, format, contentType: contentTypeOf(format) };
}

/** Why a claimed content type is refused before any byte is read, or undefined. */
function claimedTypeRefusal(what: string, claimed: string): string | undefined {
  if (!claimed.startsWith('image/')) return `${what} is ${claimed || 'of no content type'}, not an image`;
  if (claimed.startsWith('image/svg')) return `${what} is an SVG image: SVG is never accepted (only PNG, JPEG and WEBP)`;
  return undefined;
}

function decodeDataUri(uri: string, maxBytes: number): OpenedImage {
  const comma = uri.indexOf(',');
  const header = /^data:(image\/[a-z0-9.+-]+)(?:;[a-z0-9=.+-]+)*;base64$/i.exec(comma > 0 ? uri.slice(0, comma) : '');
  if (!header) throw new DownloadError('result is a data: URI that is not a base64 image', true);
  const claimed = header[1]!.toLowerCase();
  const refusal = claimedTypeRefusal('the inline (data: URI) image', claimed);
  if (refusal) throw new DownloadError(refusal, true);
  const buf = Buffer.from(uri.slice(comma + 1), 'base64');
  if (buf.length > maxBytes) throw new DownloadError(`inline image is ${buf.length} bytes, over the ${maxBytes}-byte limit (MAX_IMAGE_BYTES)`, true);
  const format = sniffImageFormat(buf);
  if (!format) throw new DownloadError(notAnImage('the inline (data: URI) image', claimed, buf.subarray(0, 16)), true);
  return { body: Readable.from([buf], { objectMode: false }), format, contentType: contentTypeOf(format) };
}

function byteCounter(max: number, what: string): (chunk: Buffer) => void {
  let seen = 0;
  return (chunk) => {
    seen += chunk.length;
    if (seen > max) throw new DownloadError(`${what} exceeded the ${max}-byte limit (MAX_IMAGE_BYTES)`, true);
  };
}
