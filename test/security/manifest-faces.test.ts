// Manifests that reach outside: a face may name only files inside the manifest's folder (links
// followed) and s3:// objects under the prefixes the run may read (FACE_PREFIXES, FACE_BUCKETS). Anything else is a rejected row that
// is never uploaded, presigned or handed to fal. Real redis-server, s3rver, emulator and workers.
import assert from 'node:assert/strict';
import { mkdir, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { CreateBucketCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { runLayout } from '../../src/core/layout.ts';
import { produceRun } from '../../src/producer/produce.ts';
import { waitForRun } from '../../src/producer/wait.ts';
import { facePng, writeFaces } from '../helpers/faces.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';

let t: TestStack;

before(async () => {
  t = await startTestStack({ env: { S3_PREFIX: 'pfx/', FACE_BUCKETS: 'shared-faces', FACE_PREFIXES: 's3://portrait-test/pfx/faces/' } });
});
after(() => t.stop());

async function reportOf(runId: string): Promise<Map<string, { status: string; error: string }>> {
  const { parse } = await import('csv-parse/sync');
  const chunks: Buffer[] = [];
  for await (const c of await t.ctx.storage.getStream(runLayout(t.ctx.cfg.S3_PREFIX, runId).report)) chunks.push(c as Buffer);
  const rows = parse(Buffer.concat(chunks), { columns: true }) as Record<string, string>[];
  return new Map(rows.map((r) => [r.id!, { status: r.status!, error: r.error! }]));
}

async function objectsUnder(prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of t.ctx.storage.list(prefix)) keys.push(o.key);
  return keys;
}

test('local faces outside the manifest folder (../, absolute, symlinks out) are rejected rows, never uploaded or submitted', async () => {
  const secret = join(t.dir, 'secret');
  const folder = join(t.dir, 'batch');
  await mkdir(secret, { recursive: true });
  await writeFaces(join(folder, 'faces'), 1);
  await writeFile(join(secret, 'x.png'), await facePng(1));
  await writeFile(join(secret, 'creds.txt'), 'aws_secret_access_key=hunter2\n');
  await symlink('../secret/creds.txt', join(folder, 'link.png'));
  await symlink('faces/face-0.png', join(folder, 'inner-link.png'));
  const manifest = join(folder, 'm.csv');
  await writeFile(
    manifest,
    [
      'id,face_url',
      'ok,faces/face-0.png',
      'inner,inner-link.png', // a link that stays inside is fine
      'dotdot,../secret/x.png',
      `absolute,${join(secret, 'x.png')}`,
      'link,link.png',
      'sneaky,faces/../../secret/x.png',
    ].join('\n'),
  );
  const { runId } = await produceRun(t.ctx, manifest);
  const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
  assert.deepEqual([run.completed, run.rejected], [2, 4]);

  const report = await reportOf(runId);
  for (const id of ['dotdot', 'absolute', 'sneaky']) {
    assert.equal(report.get(id)!.status, 'rejected', id);
    assert.match(report.get(id)!.error, /^face_url: local file ".+" is outside the manifest's folder/, id);
  }
  assert.equal(report.get('link')!.status, 'rejected');
  assert.match(report.get('link')!.error, /^face_url: local file "link.png" is a link to a file outside the manifest's folder/);

  const inputs = await objectsUnder(`${runLayout(t.ctx.cfg.S3_PREFIX, runId).base}inputs/`);
  assert.deepEqual(inputs.map((k) => k.split('/').pop()).sort(), ['inner.png', 'ok.png'], 'only faces inside the folder were uploaded');
  const submitted = Object.keys(t.local.emulator!.stats().acceptedByRow);
  for (const id of ['dotdot', 'absolute', 'link', 'sneaky']) assert.ok(!submitted.includes(`${runId}/${id}`), `${id} was handed to fal`);
});

test('s3:// faces only under FACE_PREFIXES and FACE_BUCKETS; others are rejected rows, never presigned', async () => {
  const png = await facePng(2);
  for (const bucket of ['other-bucket', 'shared-faces']) await t.ctx.storage.client.send(new CreateBucketCommand({ Bucket: bucket }));
  const put = (Bucket: string, Key: string) => t.ctx.storage.client.send(new PutObjectCommand({ Bucket, Key, Body: png, ContentType: 'image/png' }));
  const own = t.ctx.storage.bucket;
  await put('other-bucket', 'secret.png');
  await put('shared-faces', 'a.png');
  await put(own, 'pfx/faces/a.png');
  await put(own, 'outside/a.png');
  const manifest = await t.manifest(
    's3.csv',
    [
      'id,face_url',
      `own,s3://${own}/pfx/faces/a.png`,
      'shared,s3://shared-faces/a.png',
      'other,s3://other-bucket/secret.png',
      `unprefixed,s3://${own}/outside/a.png`,
      `dots,s3://${own}/pfx/../outside/a.png`,
    ].join('\n'),
  );
  const { runId } = await produceRun(t.ctx, manifest);
  const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
  assert.deepEqual([run.completed, run.rejected], [2, 3]);
  const report = await reportOf(runId);
  assert.equal(report.get('own')!.status, 'completed');
  assert.equal(report.get('shared')!.status, 'completed');
  assert.equal(
    report.get('other')!.error,
    `face_url: "s3://other-bucket/secret.png" is outside the faces this run may read (FACE_PREFIXES s3://portrait-test/pfx/faces/, s3://shared-faces/, or the manifest's folder: none, the manifest is not in S3)`,
  );
  assert.match(report.get('unprefixed')!.error, /^face_url: .* is outside the faces this run may read/);
  assert.match(report.get('dots')!.error, /^face_url: .* has \. or \.\. in its key/);
  const submitted = Object.keys(t.local.emulator!.stats().acceptedByRow);
  for (const id of ['other', 'unprefixed', 'dots']) assert.ok(!submitted.includes(`${runId}/${id}`), `${id} was handed to fal`);
});

test("a worker refuses to presign a face its own drop folder says is another team's upload, even when a producer queued it", async () => {
  await t.ctx.storage.putObject('incoming/teamB/b.png', await facePng(3), 'image/png');
  const manifest = await t.manifest('lenient.csv', 'id,face_url\nfrom-lenient,s3://portrait-test/incoming/teamB/b.png\n');
  // A producer configured with another drop folder and a whole-bucket FACE_PREFIXES: it allows the face.
  const producer = { ...t.ctx, cfg: { ...t.ctx.cfg, DROP_PREFIX: 'elsewhere/', FACE_PREFIXES: ['s3://portrait-test/'] } };
  const { runId } = await produceRun(producer, manifest);
  const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
  assert.deepEqual([run.completed, run.failed], [0, 1]);
  const report = await reportOf(runId);
  assert.match(report.get('from-lenient')!.error, /^face_url: "s3:\/\/portrait-test\/incoming\/teamB\/b.png" is a drop-folder upload \(s3:\/\/portrait-test\/incoming\/\) outside this manifest's folder: never a face$/);
  assert.ok(!Object.keys(t.local.emulator!.stats().acceptedByRow).includes(`${runId}/from-lenient`));
});
