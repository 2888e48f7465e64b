// End to end on real parts: a manifest of 60 rows through BullMQ, the unmodified fal client, the
// emulator, signed webhooks (every result by webhook, none polled) and the store workers into S3 —
// every object checked — then a rerun that submits nothing.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import sharp from 'sharp';
import { auditRun } from '../src/audit.ts';
import { runLayout } from '../src/core/layout.ts';
import type { RowMeta } from '../src/worker/flush.ts';
import { faceDataUri, writeFaces } from './helpers/faces.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

let t: TestStack;
let manifestPath: string;
let runId: string;

before(async () => {
  // A grace period longer than the test: every result must come by webhook, none by polling.
  t = await startTestStack({ env: { RECONCILE_GRACE_MS: '600000', FACE_PREFIXES: 's3://portrait-test/inputs/' } });
  await writeFaces(join(t.dir, 'faces'), 4);
  // One face in S3, named by s3:// URL.
  await t.ctx.storage.upload('inputs/s3-face.png', Buffer.from((await faceDataUri(9)).split(',')[1]!, 'base64'), 'image/png');
  const rows = ['id,face_url,image_size,num_images,output_format,seed,team'];
  for (let i = 0; i < 60; i++) {
    const face = i % 10 === 0 ? `s3://${t.ctx.storage.bucket}/inputs/s3-face.png` : i % 7 === 0 ? await faceDataUri(i) : `faces/face-${i % 4}.png`;
    const size = ['', 'portrait_4_3', 'square', '320x480'][i % 4];
    const fmt = ['', 'jpeg', 'webp', 'png'][i % 4];
    rows.push(`p${i},"${face}",${size},${(i % 3) + 1},${fmt},${i % 5 === 0 ? 1000 + i : ''},"team ${i % 2}"`);
  }
  rows.push('bad-size,faces/face-0.png,huge,1,,,x'); // rejected: image_size
  rows.push('p1,faces/face-0.png,,1,,,x'); // rejected: repeated id
  manifestPath = await t.manifest('m.csv', `${rows.join('\n')}\n`);
});

after(() => t.stop());

test('a 62-row manifest ends with every row stored or rejected, and S3 holds exactly that', async () => {
  const res = await t.pb.startRun(manifestPath);
  runId = res.runId;
  assert.equal(res.resumed, false);
  assert.equal(res.total, 62);
  const run = await t.pb.waitForRun(runId, { timeoutMs: 120_000 });
  assert.equal(run.state, 'finished');
  assert.deepEqual([run.completed, run.failed, run.rejected, run.canceled], [60, 0, 2, 0]);

  const layout = runLayout(t.ctx.cfg.S3_PREFIX, runId);
  const summary = await t.ctx.storage.getJson<Record<string, unknown>>(layout.summary);
  assert.equal(summary?.runId, runId);
  assert.equal(summary?.state, 'finished');
  assert.deepEqual([summary?.total, summary?.completed, summary?.failed, summary?.rejected, summary?.canceled], [62, 60, 0, 2, 0]);
  assert.ok(summary?.startedAt && summary?.finishedAt);

  const stats = t.local.emulator!.stats();
  assert.deepEqual([stats.statusCalls, stats.resultCalls], [0, 0], 'no result was polled: the webhooks delivered them all');
  assert.equal(stats.webhooksDelivered, 60);
  const audit = await auditRun(t.ctx, runId, { acceptedByRow: stats.acceptedByRow, verifyHashes: true });
  assert.deepEqual(audit.problems, []);
  assert.equal(audit.completed, 60);

  const chunks: Buffer[] = [];
  for await (const c of await t.ctx.storage.getStream(layout.report)) chunks.push(c as Buffer);
  const report = parse(Buffer.concat(chunks), { columns: true }) as Record<string, string>[];
  assert.deepEqual(Object.keys(report[0]!), ['line', 'id', 'row_key', 'face_url', 'status', 'request_id', 'attempts', 'images', 'seed', 'error', 'error_type', 'error_category', 'face_width', 'face_height', 'face_sha256']);
  assert.equal(report.length, 62);
  const bad = report.find((r) => r.id === 'bad-size')!;
  assert.equal(bad.status, 'rejected');
  assert.match(bad.error!, /image_size/);
  const dup = report.filter((r) => r.id === 'p1');
  assert.deepEqual(dup.map((r) => r.status), ['completed', 'rejected']);
  assert.match(dup[1]!.error!, /line 3/);

  // Every image object: the right count, format, size, metadata.
  let wideSeeds = 0;
  for (const [i, r] of report.filter((x) => x.status === 'completed').entries()) {
    const n = Number(r.id!.slice(1));
    const keys = r.images!.split('|');
    assert.equal(keys.length, (n % 3) + 1, `row ${r.id} image count`);
    const meta = (await t.ctx.storage.getJson<RowMeta>(layout.meta(r.id!)))!;
    assert.equal(meta.request_id, r.request_id);
    assert.equal(meta.attempts, 1);
    assert.deepEqual(meta.extra, { team: `team ${n % 2}` });
    if (n % 5 === 0) assert.equal(meta.seed, String(1000 + n));
    // What fal got and gave: no image_size unless the row has one; the seed exactly as fal sent it.
    const sent = await (await fetch(`${t.local.emulator!.url}/_emulator/requests/${r.request_id}`)).text();
    assert.equal(/"image_size"/.test(sent.slice(0, sent.indexOf('"output"'))), n % 4 !== 0, `row ${r.id} image_size sent`);
    const falSeed = /"output":\{.*"seed":(\d+)/.exec(sent)?.[1];
    assert.equal(r.seed, falSeed, `row ${r.id}: report seed is fal's seed`);
    assert.equal(meta.seed, falSeed, `row ${r.id}: metadata seed is fal's seed`);
    if (BigInt(falSeed!) > 2n ** 53n) wideSeeds++;
    const fmt = ['png', 'jpeg', 'webp', 'png'][n % 4]!;
    for (const [k, key] of keys.entries()) {
      assert.equal(key, layout.image(r.id!, k, fmt));
      if (i % 3 !== 0) continue; // decode a third of them; the audit hashed all
      const chunksImg: Buffer[] = [];
      for await (const c of await t.ctx.storage.getStream(key)) chunksImg.push(c as Buffer);
      const info = await sharp(Buffer.concat(chunksImg)).metadata();
      assert.equal(info.format, fmt === 'jpeg' ? 'jpeg' : fmt);
      assert.equal(info.width, meta.images[k]!.width);
      assert.equal(info.height, meta.images[k]!.height);
      // No image_size: the face's own size (the test faces are 96×96), unscaled.
      const [w, h] = [[96 / 0.125, 96 / 0.125], [768, 1024], [512, 512], [320, 480]][n % 4]!;
      assert.equal(info.width, Math.round(w! * 0.125));
      assert.equal(info.height, Math.round(h! * 0.125));
    }
  }
  assert.ok(wideSeeds > 0, 'some of fal\'s 64-bit seeds are beyond what a double holds, and survived');
});

test('running the same manifest again resumes the same run and submits nothing', async () => {
  const before = t.local.emulator!.stats().submits;
  const res = await t.pb.startRun(manifestPath);
  assert.equal(res.runId, runId);
  assert.equal(res.resumed, true);
  const run = await t.pb.waitForRun(runId, { timeoutMs: 30_000 });
  assert.equal(run.completed, 60);
  await new Promise((r) => setTimeout(r, 1000)); // a reconcile sweep or two
  assert.equal(t.local.emulator!.stats().submits, before);
});
