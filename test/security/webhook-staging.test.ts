// Redis holds only small result jobs: a sync_mode result (its images inline as data: URIs) is staged in
// S3 under the run's prefix and the job holds the key; the row completes from it and the staged object
// is removed. Failed result jobs are kept bounded. Real redis-server, s3rver, emulator, receiver, workers.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { runLayout } from '../../src/core/layout.ts';
import { resultJobOptions } from '../../src/core/queues.ts';
import { produceRun } from '../../src/producer/produce.ts';
import { waitForRun } from '../../src/producer/wait.ts';
import { writeFaces } from '../helpers/faces.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';

let t: TestStack;
before(async () => {
  t = await startTestStack({ emulator: { sizeScale: 1 } }); // real-sized images: payloads of hundreds of KB
  await writeFaces(join(t.dir, 'faces'), 2);
});
after(() => t.stop());

test('sync_mode results go through S3, not Redis jobs; rows complete and no staged object is left', async () => {
  const rows = ['id,face_url,sync_mode,num_images,image_size'];
  for (let i = 0; i < 4; i++) rows.push(`s${i},faces/face-${i % 2}.png,true,2,512x512`);
  const { runId } = await produceRun(t.ctx, await t.manifest('sync.csv', `${rows.join('\n')}\n`));
  const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
  assert.deepEqual([run.state, run.completed, run.failed], ['finished', 4, 0]);

  // Completed result jobs are kept an hour: none of them carries the images.
  const jobs = await t.ctx.queues.results.getJobs(['completed', 'failed', 'waiting', 'delayed', 'active']);
  assert.ok(jobs.length >= 4);
  for (const job of jobs) {
    assert.ok(JSON.stringify(job.data).length < 4096, `job ${job.id} holds ${JSON.stringify(job.data).length} bytes`);
    assert.equal(job.data.payload, undefined, `job ${job.id} has no inline payload`);
    assert.match(job.data.payloadKey ?? '', new RegExp(`^${runLayout(t.ctx.cfg.S3_PREFIX, runId).base}staging/`));
  }
  const layout = runLayout(t.ctx.cfg.S3_PREFIX, runId);
  const staged: string[] = [];
  for await (const o of t.ctx.storage.list(`${layout.base}staging/`)) staged.push(o.key);
  assert.deepEqual(staged, [], 'staged payloads are removed once stored');
  const images: string[] = [];
  for await (const o of t.ctx.storage.list(`${layout.base}images/`)) images.push(o.key);
  assert.equal(images.length, 8);
});

test('failed result jobs are kept bounded by count as well as age', () => {
  const opts = resultJobOptions(t.ctx.policy, 'r', 'OK');
  assert.ok(typeof opts.removeOnFail === 'object' && (opts.removeOnFail as { count?: number }).count! <= 1000);
});
