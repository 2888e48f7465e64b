import assert from 'node:assert/strict';
import { DownloadError } from '../../src/core/errors.ts';

/** For assert.rejects: a DownloadError, permanent or worth retrying, whose message matches. */
export const refused = (permanent: boolean, msg: RegExp) => (err: unknown) => {
  assert.ok(err instanceof DownloadError, String(err));
  assert.equal(err.permanent, permanent);
  assert.match(err.message, msg);
  return true;
};
