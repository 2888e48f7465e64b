// The embedded S3-compatible server (s3rver) for the local default and tests: real S3 HTTP on a
// loopback port, objects stored as files under a directory of ours. s3rver is a dev dependency (it
// and its XML/multipart parsers stay out of the production image), so it is loaded only here, when
// the embedded S3 is actually started.
import { randomUUID } from 'node:crypto';
import { mkdir, rename, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import type S3rverType from 's3rver';
import { UnreachableError } from '../core/reachability.ts';

export interface RunningS3 {
  endpoint: string;
  port: number;
  close(): Promise<void>;
}

/** s3rver accepts any signature made with these credentials. */
export const S3RVER_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };

async function loadS3rver(): Promise<typeof S3rverType> {
  try {
    return (await import('s3rver')).default;
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND') {
      throw new UnreachableError('the embedded S3 server (s3rver) is not installed here: set S3_ENDPOINT to a real S3, or install the dev dependencies (npm ci).');
    }
    throw err;
  }
}

export async function startS3Server(opts: { dir: string; port?: number; buckets?: string[]; allowMismatchedSignatures?: boolean }): Promise<RunningS3> {
  const S3rver = await loadS3rver();
  await mkdir(opts.dir, { recursive: true });
  const server = new S3rver({
    port: opts.port ?? 0,
    address: '127.0.0.1',
    directory: opts.dir,
    silent: true,
    configureBuckets: (opts.buckets ?? []).map((name) => ({ name })),
    allowMismatchedSignatures: opts.allowMismatchedSignatures,
  });
  keepEmptyDirectories(server);
  oneWriterPerKey(server);
  const addr = (await server.run()) as { port: number };
  const close = async () => {
    const closing = server.close();
    // Like a server that is gone: open keep-alive connections end too, instead of serving on.
    (server as unknown as { httpServer?: { closeAllConnections?(): void } }).httpServer?.closeAllConnections?.();
    await closing;
  };
  return { endpoint: `http://127.0.0.1:${addr.port}`, port: addr.port, close };
}

interface FilesystemStore {
  getResourcePath(bucket: string, key: string, resource: string): string;
  deleteObject(bucket: string, key: string): Promise<void>;
  putObject(object: { bucket: string; key: string }): Promise<unknown>;
  copyObject(srcBucket: string, srcKey: string, destBucket: string, destKey: string, metadata: unknown): Promise<unknown>;
  getObject(bucket: string, key: string, options: unknown): Promise<unknown>;
}

/** Not a bucket anyone uses: where PUTs are written before they are renamed into place. */
const STAGING_BUCKET = '.staging';

const storeOf = (server: S3rverType) => (server as unknown as { store: FilesystemStore }).store;

/**
 * s3rver removes a key's parent directories once its last object is deleted. A PUT into the same
 * directory at that moment opens its file in a directory that has just gone, on a write stream
 * without an error listener, and the uncaught ENOENT ends the whole process (the demo, a test). Its
 * delete here removes the object's files only: an empty directory lists as nothing.
 */
function keepEmptyDirectories(server: S3rverType): void {
  const store = storeOf(server);
  store.deleteObject = async (bucket, key) => {
    await Promise.all(
      ['object', 'object.md5', 'metadata.json'].map((resource) =>
        unlink(store.getResourcePath(bucket, key, resource)).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') throw err;
        }),
      ),
    );
  };
}

/**
 * s3rver's copy is not atomic: it unlinks the destination, then copies the source file. Two copies of
 * one object racing a delete of its source (two drop-folder schedulers moving the same upload) could
 * leave neither source nor destination. Real S3 copies atomically; here the writes of each key (put,
 * copy, delete) are done one at a time, in the order they arrived.
 */
function oneWriterPerKey(server: S3rverType): void {
  const store = storeOf(server);
  const tails = new Map<string, Promise<void>>();
  const serialized = async <T>(keys: string[], write: () => Promise<T>): Promise<T> => {
    const unique = [...new Set(keys)];
    const before = unique.map((k) => tails.get(k));
    let done!: () => void;
    const mine = new Promise<void>((resolve) => (done = resolve));
    for (const k of unique) tails.set(k, mine);
    await Promise.all(before);
    try {
      return await write();
    } finally {
      done();
      for (const k of unique) if (tails.get(k) === mine) tails.delete(k);
    }
  };
  const { putObject, copyObject, deleteObject, getObject } = store;
  store.putObject = (object) =>
    serialized([`${object.bucket}/${object.key}`], async () => {
      // s3rver writes a PUT in place, so a GET meanwhile reads a half-written object (an empty JSON
      // body, say). Written aside and renamed into place, a reader sees the old object or the new one;
      // the object's file goes first, so its size and its bytes always agree.
      const staged = Object.assign(Object.create(Object.getPrototypeOf(object) as object) as typeof object, object, { bucket: STAGING_BUCKET, key: randomUUID() });
      const result = await putObject.call(store, staged);
      await mkdir(dirname(store.getResourcePath(object.bucket, object.key, 'object')), { recursive: true });
      for (const resource of ['object', 'object.md5', 'metadata.json']) {
        await rename(store.getResourcePath(STAGING_BUCKET, staged.key, resource), store.getResourcePath(object.bucket, object.key, resource));
      }
      return result;
    });
  store.copyObject = (srcBucket, srcKey, destBucket, destKey, metadata) =>
    serialized([`${srcBucket}/${srcKey}`, `${destBucket}/${destKey}`], () => copyObject.call(store, srcBucket, srcKey, destBucket, destKey, metadata));
  store.deleteObject = (bucket, key) => serialized([`${bucket}/${key}`], () => deleteObject.call(store, bucket, key));
  // A GET reads the object's size, then opens its file: in the queue too, so no rename comes between.
  // Once open, it reads the file it opened to the end, whatever is renamed into place meanwhile.
  store.getObject = (bucket, key, options) => serialized([`${bucket}/${key}`], () => getObject.call(store, bucket, key, options));
}
