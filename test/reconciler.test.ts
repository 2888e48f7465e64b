// The reconciler's sweep, called directly with its clock moved forward (no waiting for grace periods):
// pending rows whose submit job is gone are re-driven whatever the run's state, so every run finishes
// (a running run submits them, a stopped one cancels them); a request fal lost is resubmitted as a new
// attempt; a submission whose answer never came is resubmitted; a row stuck storing (its result job
// gone) has its result fetched again and stored; a terminal row its owner never flushed is flushed.
// Real Redis, S3 and the emulator; the sweep the workers schedule is kept out of the way by long
// intervals, so each step here is the test's own.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { runLayout } from '../src/core/layout.ts';
import { jobIds } from '../src/core/queues.ts';
import { produceRun } from '../src/producer/produce.ts';
import { waitForRun } from '../src/producer/wait.ts';
import type { RowMeta } from '../src/worker/flush.ts';
import { reconcileStaleRequests } from '../src/worker/reconcile.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';
import { until } from './security/helpers.ts';

const GRACE = 600_000;
/** No sweep of the workers' own, no poll before GRACE, no redrive of a store before 10 min. */
const QUIET = { RECONCILE_INTERVAL_MS: '600000', RECONCILE_GRACE_MS: String(GRACE) };

async function manifest(t: TestStack, name: string, rows: number): Promise<string> {
  const face = await faceDataUri(6);
  const lines = ['id,face_url', ...Array.from({ length: rows }, (_, i) => `${name}${i},"${face}"`)];
  return t.manifest(`${name}.csv`, `${lines.join('\n')}\n`);
}

const rowStates = async (t: TestStack, runId: string, keys: string[]) => Promise.all(keys.map(async (k) => (await t.ctx.rows.getRow(runId, k))?.state));
const submitJobs = async (t: TestStack) => (await t.ctx.queues.submit.getJobs(['waiting', 'delayed', 'prioritized', 'paused'])).length;

describe('pending rows whose submit job is gone', () => {
  let t: TestStack;
  before(async () => {
    // Submissions that keep being refused (429/5xx) put their rows back to pending between tries.
    t = await startTestStack({ env: QUIET });
  });
  after(() => t.stop());

  /** A run whose rows were each refused once and sent back to pending, their submit jobs then lost. */
  async function pendingWithoutJobs(name: string, rows: number): Promise<{ runId: string; keys: string[] }> {
    t.local.emulator!.setFaults({ submitErrorRate: 1 });
    const refused = t.local.emulator!.stats().rejectedByFault;
    const { runId } = await produceRun(t.ctx, await manifest(t, name, rows));
    const keys = Array.from({ length: rows }, (_, i) => `${name}${i}`);
    await until(async () => (await rowStates(t, runId, keys)).every((s) => s === 'pending') && t.local.emulator!.stats().rejectedByFault - refused >= rows, 'every row refused once and pending', 30_000);
    // The jobs are lost (a Redis restored from an older snapshot, an operator's clean-up): none at work, all removed.
    await t.ctx.queues.submit.pause();
    await until(async () => (await t.ctx.queues.submit.getActiveCount()) === 0, 'no submit job at work', 30_000);
    await t.ctx.queues.submit.drain(true);
    await t.ctx.queues.submit.resume();
    t.local.emulator!.setFaults({ submitErrorRate: 0 });
    assert.equal(await submitJobs(t), 0);
    assert.deepEqual(await rowStates(t, runId, keys), keys.map(() => 'pending'));
    return { runId, keys };
  }

  test('of a running run: re-driven by the sweep, and the run completes', { timeout: 90_000 }, async () => {
    const { runId } = await pendingWithoutJobs('run', 3);
    const counts = await reconcileStaleRequests(t.ctx);
    assert.equal(counts.redriven, 3);
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 45_000 });
    assert.deepEqual([run.completed, run.failed, run.canceled], [3, 0, 0]);
  });

  test('of a run that stopped: re-driven too, ended canceled by their submit jobs, so the run finishes', { timeout: 90_000 }, async () => {
    const { runId } = await pendingWithoutJobs('stop', 2);
    const accepted = t.local.emulator!.stats().accepted;
    // The run stopped (its cost cap) while its rows waited.
    await t.ctx.redis.hset(`pb:run:${runId}`, { state: 'stopped', stopReason: 'cost cap reached' });
    assert.equal((await reconcileStaleRequests(t.ctx)).redriven, 2);
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 45_000 });
    assert.deepEqual([run.completed, run.canceled], [0, 2]);
    assert.equal(t.local.emulator!.stats().accepted, accepted, 'nothing more was sent to fal');
  });
});

describe('requests that went astray at fal', () => {
  let t: TestStack;
  before(async () => {
    // Result jobs that keep trying (the storing row below stays storing until its job is removed).
    t = await startTestStack({ env: { ...QUIET, STORE_MAX_TRIES: '100' }, emulator: { latencyMs: { min: 20, max: 40 } } });
  });
  after(() => t.stop());

  test('a request fal lost (404, no webhook): resubmitted as a new attempt once the grace is over, then completed', { timeout: 60_000 }, async () => {
    t.local.emulator!.setFaults({ lostRequestRate: 1 });
    const accepted = t.local.emulator!.stats().accepted;
    const { runId } = await produceRun(t.ctx, await manifest(t, 'lost', 2));
    await until(async () => (await rowStates(t, runId, ['lost0', 'lost1'])).every((s) => s === 'submitted'), 'both rows submitted', 30_000);
    t.local.emulator!.setFaults({ lostRequestRate: 0 });
    const before = await Promise.all(['lost0', 'lost1'].map(async (k) => (await t.ctx.rows.getRow(runId, k))!));
    // Within the grace period: nothing to do yet.
    const early = await reconcileStaleRequests(t.ctx);
    assert.deepEqual([early.polled, early.resubmitted], [0, 0]);
    const later = Math.max(...before.map((r) => r.submittedAt!)) + GRACE + 1;
    const swept = await reconcileStaleRequests(t.ctx, later);
    assert.deepEqual([swept.polled, swept.resubmitted], [2, 2]);
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 45_000 });
    assert.deepEqual([run.completed, run.failed], [2, 0]);
    for (const r of before) {
      const meta = (await t.ctx.storage.getJson<RowMeta>(runLayout(t.ctx.cfg.S3_PREFIX, runId).meta(r.key)))!;
      assert.equal(meta.attempts, r.attempt + 1, `${r.key}: a new attempt`);
      assert.deepEqual(meta.request_ids.slice(0, 1), [r.requestId]);
      assert.notEqual(meta.request_id, r.requestId);
    }
    assert.equal(t.local.emulator!.stats().accepted - accepted, 4, 'the lost requests and their replacements');
  });

  test('a submission whose answer and webhook never came: resubmitted after the grace period, completed once', { timeout: 60_000 }, async () => {
    t.local.emulator!.setFaults({ ambiguousSubmitRate: 1, webhookDropRate: 1 });
    const { runId } = await produceRun(t.ctx, await manifest(t, 'amb', 1));
    let claimedAt = 0;
    await until(
      async () => {
        const row = await t.ctx.rows.getRow(runId, 'amb0');
        claimedAt = row?.claimedAt ?? 0;
        return row?.state === 'submitting' && t.local.emulator!.stats().webhooksDropped > 0;
      },
      'the row claimed, its request accepted and finished by fal, no answer and no webhook',
      30_000,
    );
    t.local.emulator!.setFaults({ ambiguousSubmitRate: 0, webhookDropRate: 0 });
    assert.equal((await reconcileStaleRequests(t.ctx)).resubmitted, 0, 'within the grace period its webhook may still name it');
    const swept = await reconcileStaleRequests(t.ctx, claimedAt + GRACE + 1);
    assert.equal(swept.resubmitted, 1);
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 45_000 });
    assert.deepEqual([run.completed, run.failed], [1, 0]);
  });

  test('a row stuck storing (its result job gone): the result is fetched again and stored', { timeout: 60_000 }, async () => {
    // Every image download fails: the result job retries with backoff while the row is storing.
    t.local.emulator!.setFaults({ imageDownloadFailureRate: 1 });
    const { runId } = await produceRun(t.ctx, await manifest(t, 'store', 1));
    let requestId = '';
    let storingSince = 0;
    await until(
      async () => {
        const row = await t.ctx.rows.getRow(runId, 'store0');
        requestId = row?.storeRequestId ?? '';
        storingSince = row?.storingSince ?? 0;
        return row?.state === 'storing';
      },
      'the row storing',
      30_000,
    );
    // Its result job dies for good: removed while it waits for its next try.
    const resultJob = jobIds.result(requestId, 'OK');
    await until(async () => (await (await t.ctx.queues.results.getJob(resultJob))?.getState()) === 'delayed', 'the result job waiting to retry', 30_000);
    await (await t.ctx.queues.results.getJob(resultJob))!.remove();
    t.local.emulator!.setFaults({ imageDownloadFailureRate: 0 });
    assert.equal((await reconcileStaleRequests(t.ctx)).redriven, 0, 'storing for a moment only: its job may still be at work');
    const results = t.local.emulator!.stats().resultCalls;
    const swept = await reconcileStaleRequests(t.ctx, storingSince + t.ctx.policy.reconcile.redriveStoreAfterMs + 1);
    assert.equal(swept.redriven, 1);
    assert.equal(t.local.emulator!.stats().resultCalls - results, 1, 'the result fetched again from fal');
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 45_000 });
    assert.deepEqual([run.completed, run.failed], [1, 0]);
  });
});

describe('poll mode', () => {
  let t: TestStack;
  before(async () => {
    t = await startTestStack({ env: { RESULT_DELIVERY: 'poll', RECONCILE_INTERVAL_MS: '300' }, emulator: { latencyMs: { min: 20, max: 40 } } });
  });
  after(() => t.stop());

  test('a request fal lost (404 to its poll) is handed to the sweep and resubmitted as a new attempt', { timeout: 60_000 }, async () => {
    t.local.emulator!.setFaults({ lostRequestRate: 1 });
    const { runId } = await produceRun(t.ctx, await manifest(t, 'plost', 1));
    await until(async () => (await t.ctx.rows.getRow(runId, 'plost0'))?.state === 'submitted', 'the row submitted', 30_000);
    t.local.emulator!.setFaults({ lostRequestRate: 0 });
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 45_000 });
    assert.deepEqual([run.completed, run.failed], [1, 0]);
    const meta = (await t.ctx.storage.getJson<RowMeta>(runLayout(t.ctx.cfg.S3_PREFIX, runId).meta('plost0')))!;
    assert.equal(meta.attempts, 2, 'the lost request and its replacement');
  });
});
