// Runs are the service's objects: S3 manifests (plain and gzip) run end to end; cancel stops a run
// mid-way with nothing submitted-but-untracked; retry makes a linked run of the failed rows; the cost
// cap stops at the cap; two workers with different env judge a run by the run's own policy. All on
// real redis-server, s3rver and the emulator, through the library API.
import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { gzipSync } from 'node:zlib';
import { test } from 'node:test';
import { auditRun } from '../src/audit.ts';
import { loadConfig } from '../src/core/config.ts';
import { runLayout } from '../src/core/layout.ts';
import { createPortraitBatch, ManifestError, RunControlError } from '../src/index.ts';
import { faceDataUri, writeFaces } from './helpers/faces.ts';
import { TEST_POLICY, startTestStack } from './helpers/stack.ts';
import { meta, reportOf } from './helpers/runOutputs.ts';

async function dataManifest(rows: number, prefix = 'r', extra = ''): Promise<string> {
  const face = await faceDataUri(1);
  const lines = [`id,face_url${extra ? `,${extra.split('=')[0]}` : ''}`];
  for (let i = 0; i < rows; i++) lines.push(`${prefix}${i},"${face}"${extra ? `,${extra.split('=')[1]}` : ''}`);
  return `${lines.join('\n')}\n`;
}

test('an S3 manifest, plain and .csv.gz, runs end to end: every row stored, the copy read by the workers', async () => {
  const t = await startTestStack();
  try {
    const bucket = t.ctx.storage.bucket;
    await t.ctx.storage.upload('manifests/plain.csv', Buffer.from(await dataManifest(6, 'p')), 'text/csv');
    await t.ctx.storage.upload('manifests/zipped.csv.gz', gzipSync(await dataManifest(7, 'z')), 'application/gzip');
    for (const [url, rows, prefix] of [[`s3://${bucket}/manifests/plain.csv`, 6, 'p'], [`s3://${bucket}/manifests/zipped.csv.gz`, 7, 'z']] as const) {
      const started = await t.pb.startRun(url);
      assert.equal(started.total, rows);
      const run = await t.pb.waitForRun(started.runId, { timeoutMs: 60_000 });
      assert.deepEqual([run.state, run.completed, run.failed], ['finished', rows, 0], url);
      assert.equal(run.manifest, url);
      const report = await reportOf(t.pb, started.runId);
      assert.deepEqual(report.map((r) => r.id), Array.from({ length: rows }, (_, i) => `${prefix}${i}`));
      const audit = await auditRun(t.ctx, started.runId, { acceptedByRow: t.local.emulator!.stats().acceptedByRow });
      assert.deepEqual(audit.problems, []);
    }
    await assert.rejects(t.pb.startRun(`s3://${bucket}/manifests/missing.csv`), (err: Error) => {
      assert.ok(err instanceof ManifestError);
      assert.match(err.message, /cannot read the manifest s3:\/\/portrait-test\/manifests\/missing\.csv: no such object/);
      return true;
    });
    await t.ctx.storage.upload('manifests/broken.csv.gz', gzipSync(await dataManifest(3)).subarray(0, 40), 'application/gzip');
    await assert.rejects(t.pb.startRun(`s3://${bucket}/manifests/broken.csv.gz`), ManifestError);
  } finally {
    await t.stop();
  }
});

test('cancel mid-run: queued requests are canceled at fal, every unfinished row ends canceled, nothing is untracked', async () => {
  // One slot and slow requests: most submissions wait IN_QUEUE at fal when the run is canceled (more
  // places allowed on fal's side than it has slots, as when FAL_CONCURRENCY overstates the account's).
  const t = await startTestStack({ env: { RUN_WINDOW: '12', FAL_CONCURRENCY: '12' }, emulator: { slots: 1, latencyMs: { min: 400, max: 400 } } });
  try {
    const { runId } = await t.pb.startRun(await t.manifest('cancel.csv', await dataManifest(30)));
    let s = (await t.pb.status(runId))!;
    for (let i = 0; i < 200 && !(s.completed >= 1 && s.submits >= 6); i++) {
      await sleep(50);
      s = (await t.pb.status(runId))!;
    }
    assert.ok(s.completed >= 1 && s.submits >= 6, `mid-run (${s.completed} completed, ${s.submits} submitted)`);
    const res = await t.pb.cancelRun(runId);
    assert.deepEqual([res.outcome, res.state], ['canceled', 'canceled']);
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.equal(run.state, 'canceled');
    assert.match(run.stopReason!, /canceled/);
    assert.equal(run.failed, 0);
    assert.equal(run.completed + run.canceled, 30);
    assert.ok(run.canceled >= 15, `most rows canceled (${run.canceled})`);
    assert.ok(t.local.emulator!.stats().canceled >= 1, 'queued requests were canceled at fal');

    const report = await reportOf(t.pb, runId);
    assert.deepEqual([...new Set(report.map((r) => r.status))].sort(), ['canceled', 'completed']);
    // Every request fal accepted belongs to a row's recorded requests: nothing submitted-but-untracked.
    let tracked = 0;
    for (const r of report) tracked += ((await meta(t, runId, r.row_key!))?.request_ids ?? []).length;
    // The run finished only once every submission in flight at the cancel was resolved and recorded.
    assert.equal(t.local.emulator!.stats().accepted, tracked);
    const audit = await auditRun(t.ctx, runId, { acceptedByRow: t.local.emulator!.stats().acceptedByRow });
    assert.deepEqual(audit.problems, []);
    assert.equal(audit.extraSubmits, 0);
    assert.equal((await t.pb.cancelRun(runId)).outcome, 'finished', 'a finished run stays as it is');
    await assert.rejects(t.pb.cancelRun('no-such-run'), RunControlError);
  } finally {
    await t.stop();
  }
});

test('retry: the failed rows run again in a new run with the same row keys and faces, linked both ways', async () => {
  // MAX_ATTEMPTS 1: the emulated runner crash (runner_server_error) is otherwise tried again until it completes.
  const t = await startTestStack({ env: { MAX_ATTEMPTS: '1' }, emulator: { seed: 11, faults: { modelErrorRate: 0.5 } } });
  try {
    await writeFaces(join(t.dir, 'faces'), 3);
    const lines = ['id,face_url,image_size'];
    for (let i = 0; i < 10; i++) lines.push(`${i % 2 ? `k${i}` : ''},faces/face-${i % 3}.png,${i % 2 ? 'square' : ''}`);
    const first = await t.pb.startRun(await t.manifest('retry.csv', `${lines.join('\n')}\n`));
    const done = await t.pb.waitForRun(first.runId, { timeoutMs: 60_000 });
    assert.ok(done.failed >= 1 && done.completed >= 1, `a mix (${done.completed} completed, ${done.failed} failed)`);
    const failedKeys = (await reportOf(t.pb, first.runId)).filter((r) => r.status === 'failed').map((r) => r.row_key);

    t.local.emulator!.setFaults({ modelErrorRate: 0 });
    const retry = await t.pb.retryFailed(first.runId);
    assert.equal(retry.rows, done.failed);
    assert.notEqual(retry.runId, first.runId);
    const again = await t.pb.waitForRun(retry.runId, { timeoutMs: 60_000 });
    assert.deepEqual([again.state, again.total, again.completed, again.failed], ['finished', done.failed, done.failed, 0]);
    const retried = await reportOf(t.pb, retry.runId);
    assert.deepEqual(retried.map((r) => r.row_key), failedKeys, 'the same row keys (ids and line-N alike), in manifest order');
    assert.ok(retried.every((r) => r.status === 'completed'));
    const audit = await auditRun(t.ctx, retry.runId, { acceptedByRow: t.local.emulator!.stats().acceptedByRow });
    assert.deepEqual(audit.problems, []);

    // Linked both ways, in Redis and in both summaries.
    const layout = (id: string) => runLayout(t.ctx.cfg.S3_PREFIX, id);
    const s1 = (await t.ctx.storage.getJson<{ retriedBy: string[]; retryOf: string | null }>(layout(first.runId).summary))!;
    const s2 = (await t.ctx.storage.getJson<{ retriedBy: string[]; retryOf: string | null }>(layout(retry.runId).summary))!;
    assert.deepEqual([s1.retriedBy, s1.retryOf], [[retry.runId], null]);
    assert.deepEqual([s2.retriedBy, s2.retryOf], [[], first.runId]);
    assert.deepEqual((await t.pb.status(first.runId))!.retriedBy, [retry.runId]);
    await assert.rejects(t.pb.retryFailed(retry.runId), /has no failed rows/);
  } finally {
    await t.stop();
  }
});

test('--max-cost: submitting stops once the next row would pass the cap; the run ends stopped with the reason', async () => {
  // 1 per megapixel; rows without image_size count 1 MP an image: each row costs 1.
  const t = await startTestStack({ env: { PRICE_PER_MEGAPIXEL: '1', SUBMIT_CONCURRENCY: '4' } });
  try {
    const started = await t.pb.startRun(await t.manifest('cap.csv', await dataManifest(10)), { maxCost: 3.5 });
    assert.equal(started.estimatedCost, 10);
    const run = await t.pb.waitForRun(started.runId, { timeoutMs: 60_000 });
    assert.equal(run.state, 'stopped');
    assert.match(run.stopReason!, /^cost cap reached: 3\.00 USD submitted, the next row would pass the cap of 3\.50 USD/);
    assert.deepEqual([run.completed, run.canceled, run.failed], [3, 7, 0]);
    assert.equal(t.local.emulator!.stats().accepted, 3, 'fal was paid for 3 rows only');
    const summary = (await t.ctx.storage.getJson<Record<string, unknown>>(runLayout(t.ctx.cfg.S3_PREFIX, started.runId).summary))!;
    assert.deepEqual([summary.state, summary.estimatedCost, summary.cost, summary.maxCost, summary.currency], ['stopped', 10, 3, 3.5, 'USD']);
  } finally {
    await t.stop();
  }
});

test("two workers with different env judge a run by the run's own policy (attempts, failure threshold)", async () => {
  // The run is created with MAX_ATTEMPTS=1 and a threshold of 2 rows / 50%; every request is lost.
  const t = await startTestStack({
    workers: false,
    env: { MAX_ATTEMPTS: '1', FAILURE_THRESHOLD_MIN_ROWS: '2', FAILURE_THRESHOLD_RATIO: '0.5', RUN_WINDOW: '2' },
    emulator: { faults: { lostRequestRate: 1 } },
  });
  const lenient = { MAX_ATTEMPTS: '5', FAILURE_THRESHOLD_RATIO: '1', SUBMIT_CONCURRENCY: '1' };
  const workers = [
    createPortraitBatch(loadConfig({ ...t.local.env, ...lenient }), { name: 'w1', policy: TEST_POLICY }),
    createPortraitBatch(loadConfig({ ...t.local.env, ...lenient, MAX_ATTEMPTS: '4' }), { name: 'w2', policy: TEST_POLICY }),
  ];
  try {
    const { runId } = await t.pb.startRun(await t.manifest('policy.csv', await dataManifest(10)));
    for (const w of workers) await w.startWorkers();
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.equal(run.state, 'stopped', "the run's threshold applies though the workers' is off");
    assert.match(run.stopReason!, /failure threshold exceeded/);
    assert.equal(run.failed + run.canceled, 10);
    assert.ok(run.failed >= 2 && run.canceled >= 4, `${run.failed} failed, ${run.canceled} canceled`);
    for (const r of await reportOf(t.pb, runId)) {
      if (r.status === 'failed') assert.equal(r.attempts, '1', `row ${r.id}: one fal request, the run's limit`);
    }
    assert.equal(t.local.emulator!.stats().accepted, run.failed, 'no row got a second request');
  } finally {
    for (const w of workers) await w.close();
    await t.stop();
  }
});

test('a local manifest is run by workers that never see its folder: run uploads it and its faces first', async () => {
  const t = await startTestStack({ workers: false });
  try {
    const folder = join(t.dir, 'starter-only');
    await writeFaces(join(folder, 'faces'), 2);
    const csv = 'id,face_url\nok0,faces/face-0.png\nok1,faces/face-1.png\nmissing,faces/nope.png\n';
    await writeFile(join(folder, 'm.csv'), csv);
    const { runId, total } = await t.pb.startRun(join(folder, 'm.csv'));
    assert.equal(total, 3);
    // The starter's folder is gone before any worker reads a row.
    await rm(folder, { recursive: true, force: true });
    await t.pb.startWorkers();
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.rejected], [2, 1]);
    const report = await reportOf(t.pb, runId);
    assert.match(report.find((r) => r.id === 'missing')!.error!, /^face_url: local file "faces\/nope.png" does not exist/);
  } finally {
    await t.stop();
  }
});
