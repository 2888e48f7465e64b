// Where a manifest comes from: a local file or an S3 object (`s3://bucket/key`), either one plain CSV or
// gzip-compressed (`.gz`). Opened as a stream, never read whole; gzip is undone with zlib in a
// stream.pipeline, so an error anywhere (a truncated .gz, a dropped S3 connection) reaches the reader.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname, resolve } from 'node:path';
import { PassThrough, pipeline, type Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import type { Storage } from '../core/s3.ts';
import { ManifestError } from './errors.ts';

export interface ManifestSource {
  kind: 'local' | 's3';
  /** What the user named: an absolute path or the s3:// URL. */
  url: string;
  /** The file name without .gz and .csv, for run ids. */
  name: string;
  gzip: boolean;
  /** Directory relative local face paths are resolved against (local manifests only). */
  baseDir?: string;
  /** The manifest's text (decompressed), as a fresh stream each call. */
  open(): Promise<Readable>;
}

const S3_URL = /^s3:\/\/([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])\/(.+)$/;

/** A local path or `s3://bucket/key`. S3 sources need `storage` to be opened. */
export function manifestSource(spec: string, storage?: Pick<Storage, 'getStream'>): ManifestSource {
  if (/^s3:\/\//i.test(spec)) {
    const m = S3_URL.exec(spec);
    if (!m) throw new ManifestError(`manifest ${spec} is not an s3://bucket/key URL`);
    const [, bucket, key] = m as unknown as [string, string, string];
    const gzip = /\.gz$/i.test(key);
    return {
      kind: 's3',
      url: spec,
      name: nameOf(key),
      gzip,
      async open() {
        if (!storage) throw new ManifestError(`manifest ${spec} is in S3, and S3 is not configured here`);
        let raw: Readable;
        try {
          raw = await storage.getStream(key, bucket);
        } catch (err) {
          // Only an answer about the manifest itself makes it a bad manifest; an S3 that fails or cannot
          // be reached fails this attempt (a drop folder would otherwise file a good upload as failed).
          const why = describeS3Error(err);
          if (why) throw new ManifestError(`cannot read the manifest ${spec}: ${why}`);
          throw err;
        }
        return gzip ? gunzip(raw, spec) : raw;
      },
    };
  }
  const path = resolve(spec);
  const gzip = /\.gz$/i.test(path);
  return {
    kind: 'local',
    url: path,
    name: nameOf(path),
    gzip,
    baseDir: dirname(path),
    async open() {
      const info = await stat(path).catch(() => undefined);
      if (!info?.isFile()) throw new ManifestError(`manifest ${spec} does not exist or is not a file`);
      const raw = createReadStream(path);
      return gzip ? gunzip(raw, spec) : raw;
    },
  };
}

function nameOf(path: string): string {
  return basename(path).replace(/\.gz$/i, '').replace(/\.(csv|txt|tsv)$/i, '');
}

/** raw → gunzip, joined by stream.pipeline: a failure on either side destroys the stream the reader holds. */
function gunzip(raw: Readable, what: string): Readable {
  const out = new PassThrough();
  // The stream the reader holds gets the error (pipeline destroys every stream with it); the message
  // names the file.
  pipeline(raw, createGunzip(), out, (err) => {
    if (err) err.message = `${what}: ${err.message}`;
  });
  return out;
}

/** Why S3 refused the manifest (it does not exist, or we may not read it), or undefined for a failure of S3. */
function describeS3Error(err: unknown): string | undefined {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  if (e.name === 'NoSuchBucket') return 'no such bucket';
  if (e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404) return 'no such object';
  if (e.name === 'AccessDenied' || e.$metadata?.httpStatusCode === 403) return 'access denied';
  return undefined;
}
