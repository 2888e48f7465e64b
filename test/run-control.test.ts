// Run control at its edges, on the real stack: cancel with a row in every state (pending, submitting,
// submitted, storing, terminal) and what each becomes; retry of a running run, of a retry, twice of
// one run, and twice at once (every retry stays linked). The rows are put in their states by the same
// transitions the workers use, with real fal requests at the emulator, and the cancel sweep is given
// its clock, so no test waits for a grace period to pass.
import assert from 'node:assert/strict';
import { access, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { runLayout } from '../src/core/layout.ts';
import { cancelRun } from '../src/control/cancel.ts';
import { RunControlError } from '../src/control/errors.ts';
import { downloadRun, reportOf as reportStream } from '../src/control/outputs.ts';
import { retryFailed } from '../src/control/retry.ts';
import { keys } from '../src/core/keys.ts';
import type { SubmitJob } from '../src/core/queues.ts';
import type { RowMeta } from '../src/worker/flush.ts';
import { sweepCanceledRun } from '../src/worker/reconcile.ts';
import { faceUrlForFal } from '../src/worker/submit.ts';
import { faceDataUri } from './helpers/faces.ts';
import { reportOf } from './helpers/runOutputs.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';
import { until } from './security/helpers.ts';

let t: TestStack;
/** A second stack whose fal fails every request at first (retries need failed rows), workers started by the tests. */
let f: TestStack;
let fWorkers: Promise<unknown> | undefined;
const workersOnF = () => (fWorkers ??= f.pb.startWorkers());
const GRACE_MS = 2000; // RECONCILE_GRACE_MS of the test stack

before(async () => {
  // Workers are started by the tests that need them; fal keeps every request queued for a minute.
  t = await startTestStack({ workers: false, emulator: { slots: 1, latencyMs: { min: 60_000, max: 60_000 } } });
  f = await startTestStack({ workers: false, emulator: { faults: { modelErrorRate: 1 } } });
});

after(async () => {
  await t.stop();
  await f.stop();
});

async function manifest(name: string, rows: number, on = t): Promise<string> {
  const lines = ['id,face_url'];
  for (let i = 0; i < rows; i++) lines.push(`r${i},"${await faceDataUri(40 + i)}"`);
  return on.manifest(name, `${lines.join('\n')}\n`);
}

/** The submit job the producer queued for a row (no worker takes it: workers are not started yet). */
async function submitJob(runId: string, key: string): Promise<SubmitJob> {
  const job = (await t.ctx.queues.submit.getJobs(['waiting', 'prioritized', 'delayed'])).find((j) => j.data.runId === runId && j.data.key === key);
  assert.ok(job, `a submit job for ${key}`);
  return job.data;
}

/** Claims the row for a submission, as the submit worker does first. */
async function claim(runId: string, key: string): Promise<number> {
  const { line, row } = await submitJob(runId, key);
  const c = await t.ctx.rows.claimSubmit(runId, key, line, row);
  assert.equal(c.outcome, 'submit', `${key} claimed`);
  return (c as { attempt: number }).attempt;
}

/** Submits the row at the emulator and records it, as the submit worker does. */
async function submitAtFal(runId: string, key: string): Promise<string> {
  const attempt = await claim(runId, key);
  const { row } = await submitJob(runId, key);
  const res = await t.ctx.fal.queue.submit(t.ctx.cfg.FAL_ENDPOINT, { input: { ...row.input, image_urls: [await faceUrlForFal(t.ctx, row)] } });
  assert.equal(await t.ctx.rows.recordSubmit(runId, key, attempt, res.request_id, Date.now() + GRACE_MS), 'ok');
  return res.request_id;
}

/** A row's state; once ended and flushed (its Redis row gone), `flushed <status>` from its metadata in S3. */
async function stateOf(runId: string, key: string): Promise<string | undefined> {
  const row = await t.ctx.rows.getRow(runId, key);
  if (row) return row.state;
  const meta = await t.ctx.storage.getJson<RowMeta>(runLayout(t.ctx.cfg.S3_PREFIX, runId).meta(key));
  return meta ? `flushed ${meta.status}` : undefined;
}
const errorOf = async (runId: string, key: string) =>
  (await t.ctx.rows.getRow(runId, key))?.error ?? (await t.ctx.storage.getJson<RowMeta>(runLayout(t.ctx.cfg.S3_PREFIX, runId).meta(key)))?.error;

test('cancel with a row in each state: pending and submitted rows end canceled (the request canceled at fal), a submission waits for its answer or the grace, a storing row finishes storing, a finished row stays', async () => {
  const { runId } = await t.pb.startRun(await manifest('cancel-states.csv', 8), { runId: 'cancel-states', inline: true });
  // r0 is queued here, never claimed; r7 is pending (its submission was refused, a retry waits); r1 is being submitted (no answer yet); r2 is queued at fal; r3 is storing its
  // result; r4 completed; r5's answer arrives after the cancel; r6 failed.
  await claim(runId, 'r1');
  const storing = await submitAtFal(runId, 'r3');
  assert.equal(await t.ctx.rows.recordResult(runId, 'r3', { requestId: storing, status: 'OK' }), 'store');
  const done = await submitAtFal(runId, 'r4');
  assert.equal(await t.ctx.rows.recordResult(runId, 'r4', { requestId: done, status: 'OK' }), 'store');
  assert.equal(await t.ctx.rows.completeRow(runId, 'r4', done, [], '1', 'p'), true);
  const lateAttempt = await claim(runId, 'r5');
  const failed = await submitAtFal(runId, 'r6');
  assert.equal(await t.ctx.rows.recordResult(runId, 'r6', { requestId: failed, status: 'ERROR', error: 'model error' }), 'failed');
  // fal's one slot is taken by r3's request (a minute long): r2's request waits IN_QUEUE.
  const queued = await submitAtFal(runId, 'r2');
  assert.equal(await t.ctx.rows.releaseSubmit(runId, 'r7', await claim(runId, 'r7'), 'fal answered 429'), true);
  const states = async () => Object.fromEntries(await Promise.all(['r0', 'r1', 'r2', 'r3', 'r4', 'r5', 'r6', 'r7'].map(async (k) => [k, await stateOf(runId, k)])));
  assert.deepEqual(await states(), { r0: undefined, r1: 'submitting', r2: 'submitted', r3: 'storing', r4: 'completed', r5: 'submitting', r6: 'failed', r7: 'pending' });
  const canceledAtFal = t.local.emulator!.stats().canceled;

  const res = await cancelRun(t.ctx, runId, 'stop it');
  assert.deepEqual(res, { runId, outcome: 'canceled', state: 'canceled' });
  const run = (await t.ctx.rows.getRun(runId))!;
  assert.deepEqual([run.state, run.stopReason], ['canceled', 'stop it']);
  const jobs = await t.ctx.queues.control.getJobs(['waiting', 'delayed']);
  const cancelJobs = jobs.filter((j) => j.name === 'cancel' && (j.data as { runId: string }).runId === runId);
  assert.equal(cancelJobs.length, 1, 'a cancel job for the workers');
  assert.match(cancelJobs[0]!.id!, new RegExp(`^c~${runId}~\\d+$`));
  assert.deepEqual([cancelJobs[0]!.opts.attempts, cancelJobs[0]!.opts.removeOnComplete, cancelJobs[0]!.opts.removeOnFail], [3, true, 100]);
  assert.deepEqual(await cancelRun(t.ctx, runId), { runId, outcome: 'already', state: 'canceled' }, 'a second cancel: already');

  // The answer of r5's submission arrives now: recorded, and the caller told to take it back.
  assert.equal(await t.ctx.rows.recordSubmit(runId, 'r5', lateAttempt, 'late-request', Date.now()), 'canceled');

  // The sweep's clock starts at r1's claim: however slow the machine, r1 is within its grace.
  const now = (await t.ctx.rows.getRow(runId, 'r1'))!.claimedAt! + 1;
  await sweepCanceledRun(t.ctx, runId, now);
  assert.deepEqual(await states(), {
    r0: undefined,
    r1: 'submitting',
    r2: 'flushed canceled',
    r3: 'storing',
    r4: 'completed',
    r5: 'flushed canceled',
    r6: 'failed',
    r7: 'flushed canceled',
  });
  assert.equal(t.local.emulator!.stats().canceled, canceledAtFal + 1, "the queued request was canceled at fal (r5's was never made there)");
  assert.equal(await errorOf(runId, 'r7'), 'run canceled');
  // The queued row's job finds the run canceled when a worker takes it.
  assert.equal((await t.ctx.rows.claimSubmit(runId, 'r0', (await submitJob(runId, 'r0')).line, (await submitJob(runId, 'r0')).row)).outcome, 'canceled');
  assert.deepEqual((await t.ctx.storage.getJson<RowMeta>(runLayout(t.ctx.cfg.S3_PREFIX, runId).meta('r2')))!.request_ids, [queued], 'the canceled request stays recorded on its row');

  // Past the grace period the submission that never got an answer ends canceled; storing still stores.
  await sweepCanceledRun(t.ctx, runId, now + GRACE_MS + 1);
  assert.equal(await stateOf(runId, 'r1'), 'flushed canceled');
  assert.match((await errorOf(runId, 'r1'))!, /^run canceled; its submission got no answer/);
  assert.equal(await stateOf(runId, 'r3'), 'storing');
  assert.equal(await t.ctx.rows.completeRow(runId, 'r3', storing, [], '2', 'p'), true, 'the stored result completes its row');

  // Workers finish it: the rows ended above are flushed, the run ends canceled with its report.
  await t.pb.startWorkers();
  const final = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
  assert.deepEqual([final.state, final.completed, final.canceled, final.failed], ['canceled', 2, 5, 1]);
  const report = await reportOf(t.pb, runId);
  assert.deepEqual(
    report.map((r) => [r.id, r.status]),
    [
      ['r0', 'canceled'],
      ['r1', 'canceled'],
      ['r2', 'canceled'],
      ['r3', 'completed'],
      ['r4', 'completed'],
      ['r5', 'canceled'],
      ['r6', 'failed'],
      ['r7', 'canceled'],
    ],
  );
  assert.deepEqual(await cancelRun(t.ctx, runId), { runId, outcome: 'finished', state: 'canceled' }, 'a finished run stays as it is');
  assert.equal((await t.ctx.rows.getRun(runId))!.stopReason, 'stop it');
  await assert.rejects(cancelRun(t.ctx, 'no-such-run'), (err: unknown) => err instanceof RunControlError && err.name === 'RunControlError' && err.message === 'no run no-such-run');

  // Retrying a canceled run takes its failed rows only (canceled ones were not tried and fail nothing).
  const retry = await retryFailed(t.ctx, runId);
  assert.deepEqual([retry.runId, retry.retryOf, retry.rows, retry.total], [`${runId}-retry1`, runId, 1, 1]);
  await cancelRun(t.ctx, retry.runId);
});

const summaryOf = (on: TestStack, runId: string) => on.ctx.storage.getJson<{ retryOf: string | null; retriedBy: string[] }>(runLayout(on.ctx.cfg.S3_PREFIX, runId).summary);

test('retry: refused while the run runs; a second retry of a run and a retry of a retry each keep every link', async () => {
  const { runId } = await f.pb.startRun(await manifest('retry-twice.csv', 2, f), { runId: 'twice' });
  await assert.rejects(retryFailed(f.ctx, runId), (err: unknown) => err instanceof RunControlError && err.message === 'run twice is still running: retry it once it has finished');
  await assert.rejects(retryFailed(f.ctx, 'no-such-run'), (err: unknown) => err instanceof RunControlError && err.message === 'no run no-such-run');
  assert.equal((await f.ctx.rows.getRun(runId))!.retriedBy.length, 0);
  await workersOnF();
  assert.equal((await f.pb.waitForRun(runId, { timeoutMs: 60_000 })).failed, 2);

  const first = await retryFailed(f.ctx, runId);
  assert.deepEqual([first.runId, first.retryOf, first.rows], ['twice-retry1', runId, 2], 'the first retry is -retry1, of both failed rows');
  assert.equal((await f.pb.waitForRun(first.runId, { timeoutMs: 60_000 })).failed, 2, 'fal still fails them');
  const second = await retryFailed(f.ctx, runId);
  assert.equal(second.runId, 'twice-retry2');
  await f.pb.waitForRun(second.runId, { timeoutMs: 60_000 });
  const ofRetry = await retryFailed(f.ctx, first.runId);
  assert.deepEqual([ofRetry.runId, ofRetry.retryOf, ofRetry.rows], ['twice-retry1-retry1', first.runId, 2]);
  assert.equal((await f.ctx.rows.getRun(ofRetry.runId))!.options.facesRunId, runId, "a retry of a retry reads the first run's faces");
  assert.equal(await f.ctx.redis.hget(keys.run(runId), 'retries'), '2');
  await f.pb.waitForRun(ofRetry.runId, { timeoutMs: 60_000 });

  assert.deepEqual((await f.pb.status(runId))!.retriedBy, ['twice-retry1', 'twice-retry2'], 'the second retry is added, not put in place of the first');
  assert.deepEqual(await summaryOf(f, runId), { ...(await summaryOf(f, runId)), retryOf: null, retriedBy: ['twice-retry1', 'twice-retry2'] });
  assert.deepEqual((await f.pb.status(first.runId))!.retriedBy, [ofRetry.runId]);
  const s1 = (await summaryOf(f, first.runId))!;
  assert.deepEqual([s1.retryOf, s1.retriedBy], [runId, [ofRetry.runId]], 'the retry names the run it retries and the run that retried it');
  const s2 = (await summaryOf(f, ofRetry.runId))!;
  assert.deepEqual([s2.retryOf, s2.retriedBy], [first.runId, []]);
});

test('two retries of one run at once: both run, and both are linked', async () => {
  const { runId } = await f.pb.startRun(await manifest('retry-race.csv', 1, f), { runId: 'race' });
  await workersOnF();
  await f.pb.waitForRun(runId, { timeoutMs: 60_000 });
  const both = await Promise.all([retryFailed(f.ctx, runId), retryFailed(f.ctx, runId)]);
  assert.deepEqual(both.map((r) => r.runId).sort(), ['race-retry1', 'race-retry2']);
  for (const r of both) await f.pb.waitForRun(r.runId, { timeoutMs: 60_000 });
  assert.deepEqual((await f.pb.status(runId))!.retriedBy.sort(), ['race-retry1', 'race-retry2']);
  await until(async () => (await summaryOf(f, runId))!.retriedBy.length === 2, "both retries in the original's summary.json", 10_000);
});

test('cancel of a finished run changes nothing and queues nothing for the workers', async () => {
  const { runId } = await f.pb.startRun(await manifest('cancel-finished.csv', 1, f), { runId: 'cancel-finished' });
  await workersOnF();
  assert.notEqual((await f.pb.waitForRun(runId, { timeoutMs: 60_000 })).state, 'canceled');
  const queued = async () => (await f.ctx.queues.control.getJobs(['waiting', 'delayed', 'active', 'completed'])).filter((j) => j.name === 'cancel').length;
  const before = await queued();
  assert.deepEqual(await cancelRun(f.ctx, runId), { runId, outcome: 'finished', state: 'finished' });
  assert.equal(await queued(), before);
  assert.equal((await f.ctx.rows.getRun(runId))!.stopReason, undefined);
});


test('retry of a long run id keeps the id within bounds; a run without failed rows has nothing to retry; cancel without a reason says why; report and download wait for the end', async () => {
  await workersOnF();
  const long = 'l'.repeat(120);
  await f.pb.startRun(await manifest('retry-long.csv', 1, f), { runId: long });
  await f.pb.waitForRun(long, { timeoutMs: 60_000 });
  assert.equal((await retryFailed(f.ctx, long)).runId, `${'l'.repeat(110)}-retry1`);

  f.local.emulator!.setFaults({ modelErrorRate: 0 });
  const { runId } = await f.pb.startRun(await manifest('all-good.csv', 1, f), { runId: 'all-good' });
  await assert.rejects(reportStream(f.ctx, runId), (err: unknown) => err instanceof RunControlError && /^run all-good has no report yet: it is still running$/.test((err as Error).message));
  await assert.rejects(downloadRun(f.ctx, runId, join(f.dir, 'dl')), (err: unknown) => err instanceof RunControlError && (err as Error).message === 'run all-good is still running: download it once it has finished');
  await f.pb.waitForRun(runId, { timeoutMs: 60_000 });
  await assert.rejects(retryFailed(f.ctx, runId), (err: unknown) => err instanceof RunControlError && (err as Error).message === 'run all-good has no failed rows to retry');
  const report = Buffer.concat(await (await reportStream(f.ctx, runId)).toArray()).toString();
  assert.match(report, /^line,id,row_key,face_url,status/);
  const dl = await downloadRun(f.ctx, runId, join(f.dir, 'dl'));
  assert.equal(dl.runId, runId);
  assert.ok(dl.files >= 3, `report, summary, manifest and an image (${dl.files})`);
  await access(dl.contactSheet);
  assert.ok((await readdir(dl.dir)).length > 0);
  for (const call of [reportStream(f.ctx, 'nope'), downloadRun(f.ctx, 'nope', join(f.dir, 'x'))]) {
    await assert.rejects(call, (err: unknown) => err instanceof RunControlError && (err as Error).message === 'no run nope');
  }

  const { runId: stopped } = await f.pb.startRun(await manifest('cancel-default.csv', 1, f), { runId: 'cancel-default' });
  await cancelRun(f.ctx, stopped);
  assert.equal((await f.ctx.rows.getRun(stopped))!.stopReason, 'canceled by request');
  await f.pb.waitForRun(stopped, { timeoutMs: 60_000 });
});
