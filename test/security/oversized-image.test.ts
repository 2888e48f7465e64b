// A result image over MAX_IMAGE_BYTES (sent without a Content-Length, so the limit trips mid-body,
// after S3 has started a multipart upload) fails its row at the first try with the limit as its
// reason: s3rver refusing to abort the multipart upload must not hide why the upload stopped.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { runLayout } from '../../src/core/layout.ts';
import { produceRun } from '../../src/producer/produce.ts';
import { waitForRun } from '../../src/producer/wait.ts';
import type { RowMeta } from '../../src/worker/flush.ts';
import { faceDataUri } from '../helpers/faces.ts';
import { sendBytes, startHostileCdn, type HostileCdn } from '../helpers/hostileCdn.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';

/** Above the SDK's 5 MiB part size, so the upload is multipart when the limit trips. */
const MAX_IMAGE_BYTES = 6 * 1024 * 1024;

let cdn: HostileCdn;
let t: TestStack;

before(async () => {
  cdn = await startHostileCdn();
  t = await startTestStack({
    emulator: { publicUrl: cdn.url },
    env: { MAX_IMAGE_BYTES: String(MAX_IMAGE_BYTES), STORE_MAX_TRIES: '4', STORE_RETRY_DELAY_MS: '50' },
  });
  cdn.forwardTo(t.local.emulator!.port);
  cdn.answer('webp', sendBytes(MAX_IMAGE_BYTES + 2 * 1024 * 1024));
});

after(async () => {
  await t.stop();
  await cdn.close();
});

test('an image over MAX_IMAGE_BYTES fails its row at the first try, naming the limit', async () => {
  const manifest = `id,face_url,output_format\nfine,"${await faceDataUri(1)}",png\nhuge,"${await faceDataUri(2)}",webp\n`;
  const { runId } = await produceRun(t.ctx, await t.manifest('m.csv', manifest));
  const run = await waitForRun(t.ctx, runId, { timeoutMs: 30_000, intervalMs: 100 });

  assert.deepEqual([run.completed, run.failed], [1, 1]);
  const layout = runLayout(t.ctx.cfg.S3_PREFIX, runId);
  const meta = await t.ctx.storage.getJson<RowMeta>(layout.meta('huge'));
  assert.match(meta?.error ?? '', /exceeded the 6291456-byte limit \(MAX_IMAGE_BYTES\)/);
  assert.equal(cdn.gets('webp'), 1, 'downloaded once, never again');
  const leftovers = [];
  for await (const o of t.ctx.storage.list(layout.imagesOf('huge'))) leftovers.push(o.key);
  assert.deepEqual(leftovers, [], 'no partial image is kept');
});
