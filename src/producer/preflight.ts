// Preflight: a free look at a face before its row is paid for. fal queues first and looks at the face
// in its runner, so a face that cannot be fetched, is not an image or is too small fails after it was
// queued (and model errors may be billed). Here each face is read once, only as far as its header:
// an http(s) face through the guarded downloader (public addresses only, every redirect hop checked,
// a ranged GET of its first bytes); an s3:// face (or an http(s) URL of the service's own S3), and a
// local face the run uploaded, by one ranged GET; a data: face from its bytes. Its format comes from
// its magic bytes, its width × height from its header (imageHeader.ts), its sha256 when the whole face
// was read. A face that fails is a rejected row (category `input`) with the reason; a face that
// passes gives its size to the estimate of a row without image_size (the model's output is the face's
// size).
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Config } from '../core/config.ts';
import { DependencyError } from '../core/dependencies.ts';
import { openImage, NotAnImageError } from '../core/download.ts';
import { DownloadError, errorMessage } from '../core/errors.ts';
import { readImageHeader, type HeaderVerdict } from '../core/imageHeader.ts';
import type { ImageFormat } from '../core/imageType.ts';
import { backoffDelay, type Policy } from '../core/policy.ts';
import type { Storage } from '../core/s3.ts';
import { decodeDataFace, ownS3Object, type S3FacePolicy, type ValidRow } from '../manifest/index.ts';

/** What preflight read of a face that passed. */
export interface FaceLook {
  format: ImageFormat;
  width: number;
  height: number;
  /** The file's size, when known (the server said it, or the whole face was read). */
  bytes?: number;
  /** Only when the whole face was read (a data: face, or a face no larger than the bytes read). */
  sha256?: string;
}

/** Why a face is refused: the row's error type (category `input`) and one sentence. */
export interface FaceRefusal {
  errorType: 'face_unreachable' | 'face_not_image' | 'face_too_small' | 'face_too_large';
  reason: string;
}

export type FaceVerdict = { face: FaceLook } | { refused: FaceRefusal };

/** Where a face's bytes are. */
export type FaceSource =
  | { kind: 'bytes'; bytes: Buffer }
  | { kind: 'url'; url: string }
  | { kind: 's3'; bucket: string; key: string }
  | { kind: 'file'; path: string };

export interface PreflightSettings {
  minPx: number;
  maxMegapixels: number;
  maxBytes: number;
  privateHosts: string[];
  concurrency: number;
  policy: Policy['preflight'];
}

export function preflightSettings(cfg: Config, policy: Policy['preflight']): PreflightSettings {
  return {
    minPx: cfg.MIN_FACE_PX,
    maxMegapixels: cfg.MAX_FACE_MEGAPIXELS,
    maxBytes: cfg.MAX_FACE_BYTES,
    privateHosts: cfg.PREFLIGHT_PRIVATE_HOSTS,
    concurrency: cfg.PREFLIGHT_CONCURRENCY,
    policy,
  };
}

const MEGAPIXEL = 1024 * 1024;

/** `s3://bucket/key` → its parts (a type-only import of s3.ts: the dry run loads no S3 client it does not use). */
function parseS3Url(url: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(url);
  if (!m) throw new Error(`not an s3:// URL: ${url}`);
  return { bucket: m[1]!, key: m[2]! };
}

/**
 * Where a manifest row's face is read from. `uploadedFace` names the S3 object of a local face the run
 * uploaded (the producer); without it a local face is read from this machine's disk (the dry run).
 */
export function faceSourceOf(row: ValidRow, s3: Pick<S3FacePolicy, 'bucket' | 'endpoints'>, uploadedFace?: { bucket: string; key: string }): FaceSource {
  if (row.faceKind === 'data') return { kind: 'bytes', bytes: decodeDataFace(row.faceUrl).bytes };
  if (row.faceKind === 's3') return { kind: 's3', ...parseS3Url(row.faceUrl) };
  if (row.faceKind === 'local') return uploadedFace ? { kind: 's3', ...uploadedFace } : { kind: 'file', path: row.localPath! };
  // An http(s) URL of the service's own S3 is read as the object it names, with the service's credentials.
  const own = ownS3Object(row.faceUrl, s3);
  return own ? { kind: 's3', ...parseS3Url(own) } : { kind: 'url', url: row.faceUrl };
}

/** Looks at one face. Never throws: every failure is the face's refusal. */
export async function lookAtFace(source: FaceSource, settings: PreflightSettings, storage?: () => Storage): Promise<FaceVerdict> {
  let read: { head: Buffer; whole: boolean; size?: number };
  try {
    read = await withTries(settings.policy, () => readHead(source, settings, storage));
  } catch (err) {
    if (err instanceof NotAnImageError) return refuse('face_not_image', `the face is not an image: ${err.message}`);
    // Our own S3 not answering says nothing about the face: the batch waits for S3 (the producer's
    // job is tried again and resumes from its cursor), it is not refused.
    if (source.kind === 's3' && err instanceof DownloadError && !err.permanent) throw new DependencyError('s3', err);
    return refuse('face_unreachable', `the face could not be read: ${errorMessage(err)}`);
  }
  const size = read.whole ? read.head.length : read.size;
  if (size !== undefined && size > settings.maxBytes) {
    return refuse('face_too_large', `the face is ${size} bytes, over MAX_FACE_BYTES (${settings.maxBytes})`);
  }
  if (size === 0) return refuse('face_not_image', 'the face is an empty file');
  const header: HeaderVerdict = readImageHeader(read.head);
  if (header === 'more') {
    return refuse(
      'face_not_image',
      read.whole ? `the face ends (${read.head.length} bytes) before its image header does` : `the face's size is not within its first ${read.head.length} bytes`,
    );
  }
  if ('invalid' in header) return refuse('face_not_image', `the face is not a usable image: ${header.invalid}`);
  const { format, width, height } = header;
  if (width < settings.minPx || height < settings.minPx) {
    return refuse('face_too_small', `the face is ${width}×${height} pixels, under MIN_FACE_PX (${settings.minPx}) on a side`);
  }
  if (width * height > settings.maxMegapixels * MEGAPIXEL) {
    const mp = Math.round(((width * height) / MEGAPIXEL) * 10) / 10;
    return refuse('face_too_large', `the face is ${width}×${height} pixels (${mp} MP), over MAX_FACE_MEGAPIXELS (${settings.maxMegapixels})`);
  }
  const face: FaceLook = { format, width, height };
  if (size !== undefined) face.bytes = size;
  if (read.whole) face.sha256 = createHash('sha256').update(read.head).digest('hex');
  return { face };
}

/**
 * Looks at many faces, at most `settings.concurrency` at once; verdicts in the order of `sources`.
 * Once `signal` is aborted (the worker is closing) no further face is started and it throws.
 */
export async function lookAtFaces(
  sources: FaceSource[],
  settings: PreflightSettings,
  storage?: () => Storage,
  onDone?: () => void,
  signal?: AbortSignal,
): Promise<FaceVerdict[]> {
  const verdicts: FaceVerdict[] = new Array(sources.length);
  let next = 0;
  const lane = async () => {
    while (next < sources.length) {
      signal?.throwIfAborted();
      const i = next++;
      verdicts[i] = await lookAtFace(sources[i]!, settings, storage);
      onDone?.();
    }
  };
  await Promise.all(Array.from({ length: Math.min(settings.concurrency, sources.length) }, lane));
  return verdicts;
}

const refuse = (errorType: FaceRefusal['errorType'], reason: string): FaceVerdict => ({ refused: { errorType, reason } });

/** The face's first bytes (at most policy.headerBytes), whether they are the whole face, and its size when known. */
async function readHead(source: FaceSource, settings: PreflightSettings, storage?: () => Storage): Promise<{ head: Buffer; whole: boolean; size?: number }> {
  const n = settings.policy.headerBytes;
  switch (source.kind) {
    case 'bytes':
      return { head: source.bytes, whole: true };
    case 'file': {
      const fh = await open(source.path, 'r');
      try {
        const { size } = await fh.stat();
        const buf = Buffer.alloc(Math.min(n, size));
        const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
        return { head: buf.subarray(0, bytesRead), whole: bytesRead === size, size };
      } finally {
        await fh.close();
      }
    }
    case 's3': {
      if (!storage) throw new Error('no S3 client to read an s3:// face with');
      try {
        const { bytes, size } = await storage().getFirstBytes(source.key, n, source.bucket, AbortSignal.timeout(settings.policy.timeoutMs));
        return { head: bytes, whole: size !== undefined && bytes.length >= size, size };
      } catch (err) {
        const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
        // 416: a range of an empty object.
        if (status === 416) return { head: Buffer.alloc(0), whole: true, size: 0 };
        const permanent = status !== undefined && status >= 400 && status < 500 && status !== 408 && status !== 429;
        throw new DownloadError(`s3://${source.bucket}/${source.key}: ${errorMessage(err)}`, permanent, undefined, status);
      }
    }
    case 'url': {
      // Sizes are judged here (MAX_FACE_BYTES), not by the downloader: the body is cut after n bytes.
      const opened = await openImage(source.url, {
        allowedHosts: settings.privateHosts,
        anyPublicHost: true,
        bytesOnly: true,
        maxBytes: Number.MAX_SAFE_INTEGER,
        timeoutMs: settings.policy.timeoutMs,
        firstBytes: n,
      });
      const { head, ended } = await firstBytesOf(opened.body, n);
      return { head, whole: opened.size !== undefined ? head.length >= opened.size : ended, size: opened.size };
    }
  }
}

/**
 * Reads a body's first `n` bytes, or all of it when shorter (so a small face is read whole and gets its
 * sha256), then lets go of the rest: a server that ignores the range is cut off there.
 */
async function firstBytesOf(body: Readable, n: number): Promise<{ head: Buffer; ended: boolean }> {
  const chunks: Buffer[] = [];
  let length = 0;
  try {
    for await (const chunk of body) {
      chunks.push(chunk as Buffer);
      length += (chunk as Buffer).length;
      if (length >= n) return { head: Buffer.concat(chunks).subarray(0, n), ended: false };
    }
    return { head: Buffer.concat(chunks), ended: true };
  } finally {
    body.destroy();
  }
}

/** Tries again what failed for a reason that may pass (a stalled or refusing server, a 5xx). */
async function withTries<T>(policy: Policy['preflight'], look: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await look();
    } catch (err) {
      const transient = err instanceof DownloadError && !err.permanent;
      if (!transient || attempt >= policy.tries) throw err;
      await sleep(backoffDelay(policy.backoff, attempt));
    }
  }
}
