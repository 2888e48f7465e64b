// A row's bytes in Redis are bounded, not only the number of rows in flight: a row whose id, face URL
// and passthrough columns together exceed MAX_ROW_BYTES is a rejected row naming the column and the
// limit, and nothing of it is queued; a data: face is stored in S3 and the row names it. Real
// redis-server and s3rver; no workers, so queued jobs stay.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { runLayout } from '../../src/core/layout.ts';
import { jobIds } from '../../src/core/queues.ts';
import { produceRun } from '../../src/producer/produce.ts';
import { facePng } from '../helpers/faces.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';
import { partsReader } from '../../src/outputs/reportParts.ts';

let t: TestStack;
before(async () => {
  // PREFLIGHT off: the faces here are names that resolve nowhere; what is judged is the row's size.
  t = await startTestStack({ workers: false, webhook: false, env: { MAX_ROW_BYTES: '4096', PREFLIGHT: 'off' } });
});
after(() => t.stop());

test('a row over MAX_ROW_BYTES is rejected naming the column and the limit, and is never queued', async () => {
  const face = 'https://faces.example/a.png';
  const big = 'x'.repeat(64 * 1024);
  const manifest = await t.manifest(
    'big.csv',
    [
      'id,face_url,team,notes',
      `small,${face},red,a short note`,
      `fat-notes,${face},red,${big}`,
      `fat-team,${face},${'t'.repeat(5000)},`,
      `${'i'.repeat(100)}-fat-face,${face}?${'q'.repeat(5000)},red,`,
    ].join('\n'),
  );
  const { runId } = await produceRun(t.ctx, manifest);
  const run = (await t.ctx.rows.getRun(runId))!;
  assert.deepEqual([run.queued, run.rejected], [1, 3]);

  // Rejected rows' reasons are in the run's report parts (S3), not in Redis.
  const parts = await partsReader(t.ctx, runId);
  const reasons: (string | null)[] = [];
  for (const line of [2, 3, 4, 5]) reasons.push((await parts.take(line))?.error ?? null);
  assert.equal(reasons[0], null);
  assert.equal(reasons[1], 'notes: takes the row above MAX_ROW_BYTES (4096 bytes for the id, the face URL and the passthrough columns together): keep large data out of the manifest');
  assert.match(reasons[2]!, /^team: takes the row above MAX_ROW_BYTES \(4096 bytes/);
  assert.match(reasons[3]!, /^face_url: takes the row above MAX_ROW_BYTES \(4096 bytes/);

  const small = await t.ctx.queues.submit.getJob(jobIds.submit(runId, 'small'));
  assert.deepEqual(small?.data.row.extra, { team: 'red', notes: 'a short note' });
  for (const key of ['fat-notes', 'fat-team']) assert.equal(await t.ctx.queues.submit.getJob(jobIds.submit(runId, key)), undefined, `${key} was queued`);
});

test('a data: face goes to S3 at produce time; the queued row names the object instead of carrying the image', async () => {
  const png = await facePng(4);
  const padded = Buffer.concat([png, Buffer.alloc(256 * 1024)]); // a large image: ¼ MiB of trailing bytes
  const manifest = await t.manifest('data-face.csv', `id,face_url\ninline,"data:image/png;base64,${padded.toString('base64')}"\n`);
  const { runId } = await produceRun(t.ctx, manifest);
  const job = (await t.ctx.queues.submit.getJob(jobIds.submit(runId, 'inline')))!;
  assert.ok(JSON.stringify(job.data).length < 1024, `the queued row holds ${JSON.stringify(job.data).length} bytes`);
  const key = job.data.row.faceObjectKey!;
  assert.equal(key, `${runLayout(t.ctx.cfg.S3_PREFIX, runId).base}inputs/inline.png`);
  const chunks: Buffer[] = [];
  for await (const c of await t.ctx.storage.getStream(key)) chunks.push(c as Buffer);
  assert.ok(Buffer.concat(chunks).equals(padded), 'the stored face is the image of the data: URI');
});
