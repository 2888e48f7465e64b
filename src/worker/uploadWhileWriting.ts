// An S3 upload that reads a stream while something else writes it (a download, a report being
// built). Both sides are awaited, so neither can reject unobserved, and when the writer fails its
// error is the one reported: the upload error it causes (a truncated body, or s3rver refusing to
// abort the multipart upload) must not hide why it happened.
import type { Duplex } from 'node:stream';

export async function uploadWhileWriting(body: Duplex, upload: Promise<void>, writing: Promise<void>): Promise<void> {
  const [written, uploaded] = await Promise.allSettled([
    writing.catch((err: unknown) => {
      body.destroy(err as Error);
      throw err;
    }),
    // A failed upload stops reading: destroying the body ends the writer instead of stalling it.
    upload.catch((err: unknown) => {
      body.destroy(err as Error);
      throw err;
    }),
  ]);
  if (written.status === 'rejected') throw written.reason;
  if (uploaded.status === 'rejected') throw uploaded.reason;
}
