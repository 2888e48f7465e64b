// Reading a webhook body as raw bytes, bounded three ways: never inflated (a few KB of gzip must not
// become megabytes in memory), never more than the byte limit, and never more than `slots` bodies at
// once (each slow sender holds one slot; over the bound fal is told to come back later).
import type { IncomingMessage } from 'node:http';

/** A counting semaphore without a queue: a caller either gets a slot now or is told to come back. */
export class BodyReadSlots {
  inUse = 0;

  constructor(readonly size: number) {}

  tryAcquire(): boolean {
    if (this.inUse >= this.size) return false;
    this.inUse++;
    return true;
  }

  release(): void {
    this.inUse = Math.max(0, this.inUse - 1);
  }
}

export type BodyResult = { ok: true; raw: Buffer } | { ok: false; status: 400 | 408 | 413; reason: string };

/**
 * The raw bytes of `req`, or why not: over `limit` bytes (413, read no further), not complete within
 * `timeoutMs` (408), or the connection broke (400). The caller has already refused any Content-Encoding.
 */
export function readRawBody(req: IncomingMessage, limit: number, timeoutMs: number): Promise<BodyResult> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (r: BodyResult) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      req.off('data', onData).off('end', onEnd).off('error', onError).off('aborted', onAborted);
      if (!r.ok) {
        chunks.length = 0;
        // Discard whatever else arrives without holding it (the response is sent by the caller).
        req.resume();
      }
      resolve(r);
    };
    const onData = (c: Buffer) => {
      size += c.length;
      if (size > limit) return finish({ ok: false, status: 413, reason: `body too large (over ${limit} bytes)` });
      chunks.push(c);
    };
    const onEnd = () => finish({ ok: true, raw: Buffer.concat(chunks, size) });
    const onError = (err: Error) => finish({ ok: false, status: 400, reason: `body could not be read: ${err.message}` });
    const onAborted = () => finish({ ok: false, status: 400, reason: 'the sender closed the connection before the body ended' });
    const timer = setTimeout(() => finish({ ok: false, status: 408, reason: `body not received within ${timeoutMs} ms` }), timeoutMs);
    req.on('data', onData).on('end', onEnd).on('error', onError).on('aborted', onAborted);
  });
}

/** True when JSON text nests arrays/objects deeper than `max` (scanned without parsing, strings skipped). */
export function jsonNestsDeeperThan(raw: Buffer, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}
