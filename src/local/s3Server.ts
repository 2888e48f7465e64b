// The embedded S3-compatible server (s3rver) for the local default and tests: real S3 HTTP on a
// loopback port, objects stored as files under a directory of ours. s3rver is a dev dependency (it
// and its XML/multipart parsers stay out of the production image), so it is loaded only here, when
// the embedded S3 is actually started.
import { mkdir, unlink } from 'node:fs/promises';
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
  const addr = (await server.run()) as { port: number };
  return { endpoint: `http://127.0.0.1:${addr.port}`, port: addr.port, close: () => server.close() };
}

interface FilesystemStore {
  getResourcePath(bucket: string, key: string, resource: string): string;
  deleteObject(bucket: string, key: string): Promise<void>;
}

/**
 * s3rver removes a key's parent directories once its last object is deleted. A PUT into the same
 * directory at that moment opens its file in a directory that has just gone, on a write stream
 * without an error listener, and the uncaught ENOENT ends the whole process (the demo, a test). Its
 * delete here removes the object's files only: an empty directory lists as nothing.
 */
function keepEmptyDirectories(server: S3rverType): void {
  const store = (server as unknown as { store: FilesystemStore }).store;
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
