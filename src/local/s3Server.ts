// The embedded S3-compatible server (s3rver) for the local default and tests: real S3 HTTP on a
// loopback port, objects stored as files under a directory of ours.
import { mkdir } from 'node:fs/promises';
import S3rver from 's3rver';

export interface RunningS3 {
  endpoint: string;
  port: number;
  close(): Promise<void>;
}

/** s3rver accepts any signature made with these credentials. */
export const S3RVER_CREDENTIALS = { AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };

export async function startS3Server(opts: { dir: string; port?: number }): Promise<RunningS3> {
  await mkdir(opts.dir, { recursive: true });
  const server = new S3rver({ port: opts.port ?? 0, address: '127.0.0.1', directory: opts.dir, silent: true });
  const addr = (await server.run()) as { port: number };
  return { endpoint: `http://127.0.0.1:${addr.port}`, port: addr.port, close: () => server.close() };
}
