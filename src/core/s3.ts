import './awsNodeWarning.ts';
import { Readable } from 'node:stream';
import type * as S3Sdk from '@aws-sdk/client-s3';
import type { S3Client } from '@aws-sdk/client-s3';
import type * as LibStorage from '@aws-sdk/lib-storage';
import type * as Presigner from '@aws-sdk/s3-request-presigner';
import type { Config } from './config.ts';
import { lazyPackage } from './lazyPackage.ts';

// The AWS SDK is loaded with the first Storage; lib-storage with the first multipart upload, the
// presigner with the first signed URL (see lazyPackage.ts).
const s3Sdk = lazyPackage<typeof S3Sdk>('@aws-sdk/client-s3');
const libStorage = lazyPackage<typeof LibStorage>('@aws-sdk/lib-storage');
const presigner = lazyPackage<typeof Presigner>('@aws-sdk/s3-request-presigner');

export interface ListedObject {
  key: string;
  size: number;
  /** Without its quotes; changes whenever the object's bytes are written again differently. */
  etag: string;
  /** Milliseconds since the epoch, by the S3 server's clock. */
  lastModified: number;
}

export type S3Settings = Pick<Config, 'S3_BUCKET' | 'S3_PREFIX' | 'S3_ENDPOINT' | 'S3_REGION' | 'S3_FORCE_PATH_STYLE'> &
  Partial<Pick<Config, 'S3_PUBLIC_ENDPOINT'>>;

export class Storage {
  private readonly sdk = s3Sdk();
  readonly client: S3Client;
  /** Signs face URLs for fal: against S3_PUBLIC_ENDPOINT when set (fal's way in), else the client itself. */
  private readonly presigner: S3Client;
  readonly bucket: string;
  readonly prefix: string;

  constructor(cfg: S3Settings) {
    this.client = Storage.s3Client(cfg, cfg.S3_ENDPOINT);
    this.presigner = cfg.S3_PUBLIC_ENDPOINT ? Storage.s3Client(cfg, cfg.S3_PUBLIC_ENDPOINT) : this.client;
    this.bucket = cfg.S3_BUCKET;
    this.prefix = cfg.S3_PREFIX;
  }

  private static s3Client(cfg: S3Settings, endpoint: string | undefined): S3Client {
    return new (s3Sdk().S3Client)({
      region: cfg.S3_REGION,
      endpoint,
      forcePathStyle: cfg.S3_FORCE_PATH_STYLE,
      // Checksums only where S3 requires them: S3-compatible servers (MinIO, s3rver) differ in support
      // for the SDK's default streaming CRC trailers.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      maxAttempts: 5,
    });
  }

  async ensureBucket(): Promise<void> {
    try {
      await this.headBucket();
    } catch {
      await this.client.send(new this.sdk.CreateBucketCommand({ Bucket: this.bucket }));
    }
  }

  /** HEAD bucket: resolves when the bucket exists and our credentials may use it; rejects with the SDK's error. */
  async headBucket(abortSignal?: AbortSignal, bucket = this.bucket): Promise<void> {
    await this.client.send(new this.sdk.HeadBucketCommand({ Bucket: bucket }), { abortSignal });
  }

  async putJson(key: string, value: unknown): Promise<void> {
    await this.client.send(
      new this.sdk.PutObjectCommand({ Bucket: this.bucket, Key: key, Body: JSON.stringify(value, null, 2), ContentType: 'application/json' }),
    );
  }

  /**
   * Streams a body of unknown length to S3: one PutObject when it fits in a part (what lib-storage's
   * Upload would send too, without its bookkeeping, which costs about a quarter of a small image's
   * store), multipart when larger.
   */
  async upload(key: string, body: Readable | Buffer | string, contentType: string, metadata?: Record<string, string>): Promise<void> {
    let rest: Readable | Buffer | string = body;
    if (body instanceof Readable) {
      const head = await readUpTo(body, SINGLE_PUT_MAX_BYTES);
      if (head.rest === undefined) rest = Buffer.concat(head.chunks);
      else rest = Readable.from(head.rest, { objectMode: false });
    }
    if (typeof rest === 'string' || Buffer.isBuffer(rest)) {
      if (Buffer.byteLength(rest) <= SINGLE_PUT_MAX_BYTES) return this.putObject(key, rest, contentType, metadata);
    }
    await new (libStorage().Upload)({
      client: this.client,
      params: { Bucket: this.bucket, Key: key, Body: rest, ContentType: contentType, Metadata: metadata },
      partSize: SINGLE_PUT_MAX_BYTES,
    }).done();
  }

  async getStream(key: string, bucket = this.bucket): Promise<Readable> {
    const res = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: bucket, Key: key }));
    if (!res.Body) throw new Error(`s3://${bucket}/${key} has no body`);
    return res.Body as Readable;
  }

  /** An object's body and its declared length, the whole read bounded by `signal` (a time limit). */
  async getLimited(key: string, bucket: string, signal: AbortSignal): Promise<{ body: Readable; length?: number }> {
    const res = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: bucket, Key: key }), { abortSignal: signal });
    if (!res.Body) throw new Error(`s3://${bucket}/${key} has no body`);
    return { body: res.Body as Readable, length: res.ContentLength };
  }

  /** Bytes `start` to `end` (inclusive) of an object: one ranged GET. */
  async getRange(key: string, start: number, end: number, bucket = this.bucket): Promise<Buffer> {
    const res = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=${start}-${end}` }));
    if (!res.Body) throw new Error(`s3://${bucket}/${key} has no body`);
    return Buffer.from(await res.Body.transformToByteArray());
  }

  /**
   * An object's first `n` bytes and its whole size: one ranged GET (the total is after the slash of
   * its Content-Range), bounded by `signal`. Preflight reads a face's header this way.
   */
  async getFirstBytes(key: string, n: number, bucket: string, signal?: AbortSignal): Promise<{ bytes: Buffer; size?: number }> {
    const res = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: bucket, Key: key, Range: `bytes=0-${n - 1}` }), { abortSignal: signal });
    if (!res.Body) throw new Error(`s3://${bucket}/${key} has no body`);
    const total = /\/(\d+)\s*$/.exec(res.ContentRange ?? '')?.[1];
    const bytes = Buffer.from(await res.Body.transformToByteArray());
    return { bytes: bytes.subarray(0, n), size: total !== undefined ? Number(total) : res.ContentLength };
  }

  /** A small object whole (a face to hand to fal storage), with its content type. */
  async getBytes(key: string, bucket = this.bucket): Promise<{ bytes: Buffer; contentType: string }> {
    const res = await this.client.send(new this.sdk.GetObjectCommand({ Bucket: bucket, Key: key }));
    if (!res.Body) throw new Error(`s3://${bucket}/${key} has no body`);
    const bytes = Buffer.from(await res.Body.transformToByteArray());
    return { bytes, contentType: res.ContentType ?? 'application/octet-stream' };
  }

  async getJson<T>(key: string): Promise<T | undefined> {
    const text = await this.getText(key);
    return text === undefined ? undefined : (JSON.parse(text) as T);
  }

  /** A small object as UTF-8 text; undefined when there is no such object. */
  async getText(key: string): Promise<string | undefined> {
    try {
      const body = await this.getStream(key);
      const chunks: Buffer[] = [];
      for await (const c of body) chunks.push(c as Buffer);
      return Buffer.concat(chunks).toString('utf8');
    } catch (err) {
      if ((err as { name?: string }).name === 'NoSuchKey') return undefined;
      throw err;
    }
  }

  /** A small body in one PutObject. */
  async putObject(key: string, body: string | Buffer, contentType: string, metadata?: Record<string, string>): Promise<void> {
    await this.client.send(new this.sdk.PutObjectCommand({ Bucket: this.bucket, Key: key, Body: body, ContentType: contentType, Metadata: metadata }));
  }

  /**
   * Every object under a prefix, paging with Marker (ListObjects v1): s3rver cannot make v2
   * continuation tokens on Node 20 (its DES cipher is gone from OpenSSL 3), and v1 works everywhere.
   */
  async *list(prefix: string, bucket = this.bucket): AsyncGenerator<ListedObject> {
    let marker: string | undefined;
    for (;;) {
      const res = await this.client.send(new this.sdk.ListObjectsCommand({ Bucket: bucket, Prefix: prefix, Marker: marker }));
      const objects = res.Contents ?? [];
      for (const o of objects) {
        if (o.Key) yield { key: o.Key, size: o.Size ?? 0, etag: (o.ETag ?? '').replace(/"/g, ''), lastModified: o.LastModified?.getTime() ?? 0 };
      }
      if (!res.IsTruncated || !objects.length) return;
      marker = objects[objects.length - 1]!.Key;
    }
  }

  async remove(key: string): Promise<void> {
    await this.client.send(new this.sdk.DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
  }

  async deletePrefix(prefix: string): Promise<number> {
    const objects: { Key: string }[] = [];
    for await (const o of this.list(prefix)) objects.push({ Key: o.key });
    for (let i = 0; i < objects.length; i += 1000) {
      await this.client.send(new this.sdk.DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: objects.slice(i, i + 1000) } }));
    }
    return objects.length;
  }

  /** A time-limited GET URL fal can fetch an input face from (on S3_PUBLIC_ENDPOINT when set). */
  presign(key: string, expiresIn: number, bucket = this.bucket): Promise<string> {
    return presigner().getSignedUrl(this.presigner, new this.sdk.GetObjectCommand({ Bucket: bucket, Key: key }), { expiresIn });
  }
}

/** Bodies up to this size go in one PutObject; larger ones in parts of this size (lib-storage's default, S3's minimum part). */
const SINGLE_PUT_MAX_BYTES = 5 * 1024 * 1024;

/**
 * Reads a stream's first `max` bytes. When it ended within them, `rest` is undefined; otherwise `rest`
 * yields the chunks read and then the remainder of the stream (its errors included).
 */
async function readUpTo(body: Readable, max: number): Promise<{ chunks: Buffer[]; rest?: AsyncGenerator<Buffer> }> {
  const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer | string>;
  const chunks: Buffer[] = [];
  let size = 0;
  while (size <= max) {
    const next = await it.next();
    if (next.done) return { chunks };
    const chunk = typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
    chunks.push(chunk);
    size += chunk.length;
  }
  async function* rest(): AsyncGenerator<Buffer> {
    yield* chunks;
    for (;;) {
      const next = await it.next();
      if (next.done) return;
      yield typeof next.value === 'string' ? Buffer.from(next.value) : next.value;
    }
  }
  return { chunks, rest: rest() };
}

/** Parses `s3://bucket/key`. */
export function parseS3Url(url: string): { bucket: string; key: string } {
  const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(url);
  if (!m) throw new Error(`not an s3:// URL: ${url}`);
  return { bucket: m[1]!, key: m[2]! };
}
