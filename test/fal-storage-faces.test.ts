// Faces fal can fetch: fal cannot reach a private or loopback S3 endpoint, so faces held there go to
// fal's own storage (the official client's fal.storage.upload, once per face); with S3_PUBLIC_ENDPOINT
// they are presigned against that address instead.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../src/core/config.ts';
import { Storage } from '../src/core/s3.ts';
import { produceRun } from '../src/producer/produce.ts';
import { waitForRun } from '../src/producer/wait.ts';
import { writeFaces } from './helpers/faces.ts';
import { startTestStack } from './helpers/stack.ts';

test('local faces reach an emulator that, like fal, cannot reach private addresses, through fal storage', async () => {
  const t = await startTestStack({ env: { RESULT_DELIVERY: 'poll' }, emulator: { privateNetwork: false } });
  try {
    assert.equal(t.ctx.cfg.facesViaFalStorage, true, 'the embedded S3 is on loopback');
    await writeFaces(join(t.dir, 'faces'), 2);
    const lines = ['id,face_url', ...Array.from({ length: 6 }, (_, i) => `f${i},faces/face-${i % 2}.png`)];
    const { runId } = await produceRun(t.ctx, await t.manifest('faces.csv', `${lines.join('\n')}\n`));
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed], [6, 0]);
    const stats = t.local.emulator!.stats();
    assert.equal(stats.storageUploads, 6, "each row's uploaded face went to fal storage");
    assert.equal(stats.failedValidation + stats.failed, 0);
  } finally {
    await t.stop();
  }
});

test('S3_PUBLIC_ENDPOINT: faces are presigned against the public address, not the private one', async () => {
  const base = { S3_ENDPOINT: 'http://minio:9000', S3_FORCE_PATH_STYLE: 'true', AWS_ACCESS_KEY_ID: 'k', AWS_SECRET_ACCESS_KEY: 's' };
  assert.equal(loadConfig(base).facesViaFalStorage, true, 'a compose service name is private');
  const cfg = loadConfig({ ...base, S3_PUBLIC_ENDPOINT: 'https://s3.example.com' });
  assert.equal(cfg.facesViaFalStorage, false);
  const url = new URL(await new Storage(cfg).presign('inputs/a.png', 600));
  assert.equal(url.host, 's3.example.com');
  assert.ok(url.searchParams.get('X-Amz-Signature'));
  assert.equal(loadConfig({ ...base, S3_ENDPOINT: 'https://s3.eu-west-1.amazonaws.com' }).facesViaFalStorage, false);
  assert.equal(loadConfig({}).facesViaFalStorage, false, 'AWS S3 (no endpoint) is presigned');
});
