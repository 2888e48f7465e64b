// Never lose, never pay twice: each retry class, the reconciler's branches, the failure threshold, the
// auth pause, webhooks that come early, twice, or never — all against the emulator, real Redis and S3.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { auditRun } from '../src/audit.ts';
import { loadConfig } from '../src/core/config.ts';
import { getPause } from '../src/core/pause.ts';
import { runLayout } from '../src/core/layout.ts';
import { jobIds, submitJobOptions } from '../src/core/queues.ts';
import { startFaultProxy } from '../src/local/faultProxy.ts';
import { freePort } from '../src/local/ports.ts';
import { runStatus } from '../src/status.ts';
import { createPortraitBatch } from '../src/index.ts';
import { eventually } from './helpers/eventually.ts';
import { faceDataUri } from './helpers/faces.ts';
import { TEST_POLICY, startTestStack, type TestStack } from './helpers/stack.ts';
import { meta } from './helpers/runOutputs.ts';

async function manifestOf(t: TestStack, rows: number, extraCols = ''): Promise<string> {
  const face = await faceDataUri(1);
  const lines = [`id,face_url${extraCols ? `,${extraCols.split('=')[0]}` : ''}`];
  for (let i = 0; i < rows; i++) lines.push(`r${i},"${face}"${extraCols ? `,${extraCols.split('=')[1]}` : ''}`);
  return t.manifest(`m-${Date.now()}.csv`, `${lines.join('\n')}\n`);
}

async function runToEnd(t: TestStack, rows: number, timeoutMs = 60_000) {
  const { runId } = await t.pb.startRun(await manifestOf(t, rows));
  const run = await t.pb.waitForRun(runId, { timeoutMs });
  const audit = await auditRun(t.ctx, runId, { acceptedByRow: t.local.emulator!.stats().acceptedByRow });
  assert.deepEqual(audit.problems, []);
  return { runId, run, audit };
}

test('429 and 5xx submits are retried with backoff and cost no attempt', async () => {
  const t = await startTestStack({ emulator: { faults: { submitErrorRate: 1 } } });
  try {
    // fal refuses every row twice (the test policy's backoff is short), then accepts.
    const lift = (async () => {
      await eventually(() => t.local.emulator!.stats().rejectedByFault >= 6, 'fal refusing six submits', 30_000, 20);
      t.local.emulator!.setFaults({ submitErrorRate: 0 });
    })();
    const { runId, run } = await runToEnd(t, 3);
    await lift;
    assert.equal(run.completed, 3);
    assert.ok(t.local.emulator!.stats().rejectedByFault >= 3, 'fal refused the first tries');
    for (let i = 0; i < 3; i++) assert.equal((await meta(t, runId, `r${i}`))!.attempts, 1);
  } finally {
    await t.stop();
  }
});

test('connection refused is retried; the row completes once fal is reachable', async () => {
  const t = await startTestStack({ workers: false });
  const port = await freePort();
  // Workers talk to fal through a port where nothing listens yet; a proxy to the emulator opens later.
  const refused = createPortraitBatch(loadConfig({ ...t.local.env, FAL_QUEUE_URL: `http://127.0.0.1:${port}` }), { name: 'refused', policy: TEST_POLICY });
  await refused.startWorkers();
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 2));
    // Each row was tried and taken back at least once (the attempt costs nothing while fal is unreachable).
    const released = async () => {
      for (const k of ['r0', 'r1']) if (!/unreachable/.test((await t.ctx.redis.hget(`pb:row:${runId}:${k}`, 'lastError')) ?? '')) return false;
      return true;
    };
    await eventually(released, 'both rows refused by the unreachable fal and released', 10_000);
    assert.equal(t.local.emulator!.stats().submits, 0);
    assert.equal((await t.ctx.rows.getRun(runId))!.completed, 0);
    const proxy = await startFaultProxy({ target: t.local.emulator!.url, failureRate: 0, port });
    try {
      const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
      assert.equal(run.completed, 2);
      assert.equal((await meta(t, runId, 'r0'))!.attempts, 1);
    } finally {
      await proxy.close();
    }
  } finally {
    await refused.close();
    await t.stop();
  }
});

test('422 at submit fails the row with fal\'s detail and is never retried', async () => {
  // An endpoint that refuses at submit (the kind emulator; fal itself validates in the runner, below).
  // A wrongly retried 422 would be tried again until SUBMIT_RETRY_WINDOW: the row would not fail with
  // fal's detail within the test.
  const t = await startTestStack({ emulator: { validateAt: 'submit' } });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 1));
    await t.pb.waitForRun(runId, { timeoutMs: 30_000 });
    // A submit job made by hand with an input the manifest reader would refuse: fal answers 422. It
    // carries the producer's job options (retries and backoff), so a retry would be a real one.
    await t.ctx.queues.submit.add(
      'submit',
      { runId, key: 'forged', line: 999, row: { faceUrl: await faceDataUri(2), faceKind: 'data', input: { num_images: 9 }, extra: {} } },
      { jobId: jobIds.submit(runId, 'forged'), ...submitJobOptions(t.ctx.policy) },
    );
    const m = await eventually(() => meta(t, runId, 'forged'), "the forged row's metadata in S3", 10_000);
    assert.equal(m.status, 'failed');
    assert.match(m.error!, /422.*num_images/);
    assert.equal(m.attempts, 0, 'a refused submission costs no attempt');
    assert.equal(t.local.emulator!.stats().validationErrors, 1, 'exactly one call: no retry');
  } finally {
    await t.stop();
  }
});

test('a bad input that only fal\'s runner refuses (accepted, then 422) fails its row with fal\'s detail', async () => {
  const t = await startTestStack();
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 1));
    await t.pb.waitForRun(runId, { timeoutMs: 30_000 });
    // A submit job made by hand with an input the manifest reader would refuse: fal answers 422.
    await t.ctx.queues.submit.add('submit', {
      runId,
      key: 'forged',
      line: 999,
      row: { faceUrl: await faceDataUri(2), faceKind: 'data', input: { num_images: 9 }, extra: {} },
    });
    const m = await eventually(() => meta(t, runId, 'forged'), "the forged row's metadata in S3", 10_000);
    assert.equal(m.status, 'failed');
    assert.match(m.error!, /422.*num_images/);
    assert.equal(m.attempts, 1, 'fal accepted it: one attempt');
    const stats = t.local.emulator!.stats();
    assert.deepEqual([stats.validationErrors, stats.failedValidation, stats.acceptedByRow[`${runId}/forged`]], [0, 1, 1], 'refused by the runner, submitted once');
  } finally {
    await t.stop();
  }
});

test('401 pauses submissions with a reason in status; a worker with a good key resumes them', async () => {
  const t = await startTestStack({ emulator: { apiKeys: ['good-key'] } });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 4));
    await eventually(() => getPause(t.ctx), 'submissions paused', 10_000);
    const status = (await runStatus(t.ctx, runId))!;
    assert.equal(status.state, 'paused');
    assert.match(status.pauseReason!, /401/);
    const calls = t.local.emulator!.stats().submits;
    await sleep(1500);
    assert.ok(t.local.emulator!.stats().submits <= calls + 8, 'no hammering while paused');
    const good = createPortraitBatch(loadConfig({ ...t.local.env, FAL_KEY: 'good-key' }), { name: 'good', policy: TEST_POLICY });
    await t.workers!.close();
    await good.startWorkers();
    try {
      const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
      assert.equal(run.completed, 4);
      assert.equal(await getPause(t.ctx), undefined);
    } finally {
      await good.close();
    }
  } finally {
    await t.stop();
  }
});

test('403 pauses submissions like 401: no row fails, a worker with a good key resumes them', async () => {
  const t = await startTestStack({ emulator: { forbiddenKeys: ['emulator-key'] } });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 4));
    await eventually(() => getPause(t.ctx), 'submissions paused', 10_000);
    const status = (await runStatus(t.ctx, runId))!;
    assert.equal(status.state, 'paused');
    assert.match(status.pauseReason!, /403/);
    assert.equal((await t.ctx.rows.getRun(runId))!.failed, 0, 'a forbidden key is no rejected input');
    const good = createPortraitBatch(loadConfig({ ...t.local.env, FAL_KEY: 'good-key' }), { name: 'good', policy: TEST_POLICY });
    await t.workers!.close();
    await good.startWorkers();
    try {
      const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
      assert.deepEqual([run.completed, run.failed], [4, 0]);
      assert.equal(await getPause(t.ctx), undefined);
    } finally {
      await good.close();
    }
  } finally {
    await t.stop();
  }
});

test('a submit fal accepted but whose answer was lost is not paid again: its webhook completes the row', async () => {
  const t = await startTestStack({ emulator: { faults: { ambiguousSubmitRate: 1 } } });
  try {
    const { runId, run, audit } = await runToEnd(t, 4);
    assert.equal(run.completed, 4);
    const stats = t.local.emulator!.stats();
    assert.equal(stats.answersLost, 4, 'every submit answer was lost');
    assert.equal(stats.accepted, 4, 'fal accepted each row exactly once');
    assert.deepEqual(Object.values(stats.acceptedByRow), [1, 1, 1, 1]);
    for (let i = 0; i < 4; i++) {
      const m = (await meta(t, runId, `r${i}`))!;
      assert.equal(m.attempts, 1);
      assert.equal(m.request_ids.length, 1, 'the webhook named the attempt');
    }
    assert.deepEqual([audit.extraSubmits, audit.ambiguousSubmits], [0, 0]);
  } finally {
    await t.stop();
  }
});

test('a lost submit answer whose webhook never comes is resubmitted after the grace period and counted as ambiguous', async () => {
  const t = await startTestStack({ emulator: { faults: { ambiguousSubmitRate: 1, webhookDropRate: 1 } } });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 2));
    await eventually(() => t.local.emulator!.stats().answersLost >= 2, 'two submit answers lost', 5_000);
    t.local.emulator!.setFaults({ ambiguousSubmitRate: 0 });
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.equal(run.completed, 2);
    const m = (await meta(t, runId, 'r0'))!;
    assert.deepEqual([m.attempts, m.request_ids.length], [2, 1], 'attempt 1 never learned its request id');
    assert.equal(t.local.emulator!.stats().accepted, 4, 'fal ran both attempts of each row: the price of not knowing');
    const audit = await auditRun(t.ctx, runId, { acceptedByRow: t.local.emulator!.stats().acceptedByRow });
    assert.deepEqual(audit.problems, []);
    assert.deepEqual([audit.extraSubmits, audit.ambiguousSubmits], [0, 2]);
  } finally {
    await t.stop();
  }
});

test('poll mode: a lost submit answer cannot be told from a lost submit; resubmitted after the grace period, counted as ambiguous', async () => {
  const t = await startTestStack({ env: { RESULT_DELIVERY: 'poll' }, emulator: { faults: { ambiguousSubmitRate: 1 } } });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 2));
    await eventually(() => t.local.emulator!.stats().answersLost >= 2, 'two submit answers lost', 5_000);
    t.local.emulator!.setFaults({ ambiguousSubmitRate: 0 });
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.equal(run.completed, 2);
    const m = (await meta(t, runId, 'r0'))!;
    assert.deepEqual([m.attempts, m.request_ids.length], [2, 1], 'attempt 1 never learned its request id');
    assert.equal(t.local.emulator!.stats().accepted, 4, 'fal ran both attempts of each row: the price of not knowing');
    // No webhook URL names the row, so the emulator cannot book acceptances by row: the total says it.
    const audit = await auditRun(t.ctx, runId);
    assert.deepEqual(audit.problems, []);
    assert.deepEqual([audit.extraSubmits, audit.ambiguousSubmits], [0, 2]);
  } finally {
    await t.stop();
  }
});

test('reconciler: a row past ROW_DEADLINE_MS fails as timed out, its fal request is cancelled, and the run finishes', async () => {
  const t = await startTestStack({ env: { ROW_DEADLINE_MS: '1500' }, emulator: { latencyMs: { min: 30_000, max: 30_000 }, runningCancelCompletesRate: 0 } });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 2));
    const run = await t.pb.waitForRun(runId, { timeoutMs: 20_000 });
    assert.deepEqual([run.completed, run.failed], [0, 2]);
    const m = (await meta(t, runId, 'r0'))!;
    assert.match(m.error!, /timed out/);
    assert.equal(t.local.emulator!.stats().canceled, 2, 'each request was cancelled at fal');
  } finally {
    await t.stop();
  }
});

test('reconciler: webhooks that never come are replaced by polling status and result', async () => {
  const t = await startTestStack({ emulator: { faults: { webhookDropRate: 1 } } });
  try {
    const { runId, run } = await runToEnd(t, 5);
    assert.equal(run.completed, 5);
    assert.equal(t.local.emulator!.stats().webhooksDelivered, 0);
    // Results fetched with queue.result keep fal's 64-bit seeds exactly too.
    for (let i = 0; i < 5; i++) {
      const m = (await meta(t, runId, `r${i}`))!;
      const sent = await (await fetch(`${t.local.emulator!.url}/_emulator/requests/${m.request_id}`)).text();
      assert.equal(m.seed, /"output":\{.*"seed":(\d+)/.exec(sent)?.[1], `r${i}: the seed fal sent`);
    }
  } finally {
    await t.stop();
  }
});

test('reconciler: a request still queued or running is looked at again later', async () => {
  const t = await startTestStack({ emulator: { latencyMs: { min: 4000, max: 4000 }, slots: 1, faults: { webhookDropRate: 1 } } });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 2));
    const seen = new Set<string>();
    await eventually(
      async () => {
        for (const k of await t.ctx.rows.activeRowKeys(runId)) {
          const st = (await t.ctx.redis.hget(`pb:row:${runId}:${k}`, 'falStatus')) ?? '';
          if (st === 'IN_QUEUE' || st === 'IN_PROGRESS') seen.add(st);
        }
        return seen.size >= 1;
      },
      'a poll seeing the request queued or running',
      8_000,
      100,
    );
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.equal(run.completed, 2);
  } finally {
    await t.stop();
  }
});

test('reconciler: a request fal lost (404) is resubmitted as a new attempt', async () => {
  const t = await startTestStack({ emulator: { faults: { lostRequestRate: 1 } } });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 2));
    await eventually(() => t.local.emulator!.stats().lost >= 2, 'fal losing two requests', 5_000);
    t.local.emulator!.setFaults({ lostRequestRate: 0 });
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.equal(run.completed, 2);
    const m = (await meta(t, runId, 'r0'))!;
    assert.equal(m.attempts, 2);
    assert.equal(m.request_ids.length, 2);
    const audit = await auditRun(t.ctx, runId, { acceptedByRow: t.local.emulator!.stats().acceptedByRow });
    assert.equal(audit.extraSubmits, 0);
  } finally {
    await t.stop();
  }
});

test('duplicate and reordered webhooks change nothing', async () => {
  const t = await startTestStack({ emulator: { faults: { webhookDuplicateRate: 1, webhookDelayMs: { min: 0, max: 300 } } } });
  try {
    const { run } = await runToEnd(t, 8);
    assert.equal(run.completed, 8);
    assert.ok(t.local.emulator!.stats().webhooksDuplicated >= 8);
  } finally {
    await t.stop();
  }
});

test('a webhook that arrives before the submit call returned is not lost', async () => {
  // No sweep within the test: the webhooks alone complete the rows. With the usual 2 s grace a loaded
  // machine took the answer still on its way for lost and submitted again, and a lost webhook was
  // found by polling instead.
  const t = await startTestStack({ workers: false, env: { RECONCILE_GRACE_MS: '600000' }, emulator: { latencyMs: { min: 0, max: 0 } } });
  const slow = await startFaultProxy({ target: t.local.emulator!.url, failureRate: 0, methods: ['POST'], responseDelayMs: 1500 });
  const slowFal = createPortraitBatch(loadConfig({ ...t.local.env, FAL_QUEUE_URL: slow.url }), { name: 'slow', policy: TEST_POLICY });
  await slowFal.startWorkers();
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 3));
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.equal(run.completed, 3);
    const m = (await meta(t, runId, 'r0'))!;
    assert.equal(m.attempts, 1);
    assert.equal(t.local.emulator!.stats().accepted, 3, 'nothing paid twice');
    assert.deepEqual([t.local.emulator!.stats().statusCalls, t.local.emulator!.stats().resultCalls], [0, 0], 'completed by their webhooks, none polled');
  } finally {
    await slowFal.close();
    await slow.close();
    await t.stop();
  }
});

test('a submit call still waiting for fal past RECONCILE_GRACE_MS is not submitted again beside it', async () => {
  // No webhook receiver: the rows stay `submitting` until fal answers the call, 4 s later (twice the
  // test's 2 s grace, while the reconciler sweeps every 300 ms). The reconciler must see the submit
  // job still running and leave its row alone; then the rows are found by polling.
  const t = await startTestStack({ workers: false, webhook: false, emulator: { latencyMs: { min: 0, max: 0 } } });
  const slow = await startFaultProxy({ target: t.local.emulator!.url, failureRate: 0, methods: ['POST'], responseDelayMs: 4000 });
  const slowFal = createPortraitBatch(loadConfig({ ...t.local.env, FAL_QUEUE_URL: slow.url }), { name: 'slow', policy: TEST_POLICY });
  await slowFal.startWorkers();
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 2));
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed], [2, 0]);
    assert.equal((await meta(t, runId, 'r0'))!.attempts, 1, 'one attempt: the slow call was waited for');
    assert.equal(t.local.emulator!.stats().accepted, 2, 'nothing paid twice');
  } finally {
    await slowFal.close();
    await slow.close();
    await t.stop();
  }
});

test('model errors fail their rows with fal\'s reason; past the threshold the run stops and cancels the rest', async () => {
  const t = await startTestStack({
    env: { FAILURE_THRESHOLD_MIN_ROWS: '3', FAILURE_THRESHOLD_RATIO: '0.5', RUN_WINDOW: '2', SUBMIT_CONCURRENCY: '1' },
    emulator: { faults: { modelErrorRate: 1 } },
  });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 12));
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.equal(run.state, 'stopped');
    assert.ok(run.failed >= 3 && run.failed <= 5, `failed ${run.failed}`);
    assert.equal(run.failed + run.canceled, 12);
    assert.ok(run.canceled >= 7);
    const summary = await t.ctx.storage.getJson<{ state: string; canceled: number }>(runLayout(t.ctx.cfg.S3_PREFIX, runId).summary);
    assert.equal(summary!.state, 'stopped');
    const failedMeta = (await meta(t, runId, 'r0'))!;
    assert.equal(failedMeta.status, 'failed');
    assert.match(failedMeta.error!, /model error/i);
    const audit = await auditRun(t.ctx, runId, { acceptedByRow: t.local.emulator!.stats().acceptedByRow });
    assert.deepEqual(audit.problems, []);
  } finally {
    await t.stop();
  }
});

test('image download failures are retried; S3 ends with exactly the images', async () => {
  // Seeded, so the same GETs fail on every run (unseeded, all six first GETs succeeded 1 time in 64).
  const t = await startTestStack({ emulator: { seed: 5, faults: { imageDownloadFailureRate: 0.5 } } });
  try {
    const { run } = await runToEnd(t, 6);
    assert.equal(run.completed, 6);
    const stats = t.local.emulator!.stats();
    assert.ok(stats.fileFailures >= 2, `only ${stats.fileFailures} GETs failed: the test would not show retries`);
    assert.equal(stats.fileGets - stats.fileFailures, 6, 'one successful GET per image, none repeated');
  } finally {
    await t.stop();
  }
});
