// fal's failures as fal reports them, end to end on the real stack (the unmodified client against the
// emulator, real Redis and S3): what fal did not bill and may succeed is tried again as a new attempt;
// model and content-policy errors fail at once with their category; the start timeout fails without a
// resubmission; a result fal no longer keeps is "result expired", never paid twice; the audit counts
// every attempt; the report, metadata, status and summary say which kind of failure each row met.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import { auditRun } from '../src/audit.ts';
import { runLayout } from '../src/core/layout.ts';
import type { Summary } from '../src/outputs/summary.ts';
import { faceDataUri, facePng } from './helpers/faces.ts';
import { meta, reportOf } from './helpers/runOutputs.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

/**
 * A face fal fetches from an http URL of the test's own (loopback): not through fal storage, whose
 * refused copies get a fresh upload and one new attempt (falFaceRefusal.ts) — here fal's 422 must be
 * the face's own verdict.
 */
async function httpFace(): Promise<string> {
  const png = await facePng(1);
  const server = createServer((_req, res) => void res.writeHead(200, { 'content-type': 'image/png' }).end(png));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  after(() => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/face.png`;
}

async function manifestOf(t: TestStack, rows: number, face?: string): Promise<string> {
  face ??= await faceDataUri(1);
  const lines = ['id,face_url'];
  for (let i = 0; i < rows; i++) lines.push(`r${i},"${face}"`);
  return t.manifest(`m-${Date.now()}-${rows}.csv`, `${lines.join('\n')}\n`);
}

const summaryOf = (t: TestStack, runId: string) => t.ctx.storage.getJson<Summary>(runLayout(t.ctx.cfg.S3_PREFIX, runId).summary);

async function audited(t: TestStack, runId: string) {
  const audit = await auditRun(t.ctx, runId, { acceptedByRow: t.local.emulator!.stats().acceptedByRow });
  assert.deepEqual(audit.problems, []);
  assert.equal(audit.extraSubmits, 0, 'fal never accepted a row more often than the attempts recorded');
  return audit;
}

test('10% runner_server_error, MAX_ATTEMPTS=3: every row completes; the extra attempts are reported, counted and cost nothing', async () => {
  const rows = 30;
  const t = await startTestStack({
    env: { MAX_ATTEMPTS: '3', PRICE_PER_MEGAPIXEL: '1', FAL_CONCURRENCY: '8' },
    emulator: { seed: 3, faults: { errorRates: { runner_server_error: 0.1 } } },
  });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, rows));
    const run = await t.pb.waitForRun(runId, { timeoutMs: 90_000 });
    const injected = t.local.emulator!.stats().errorsByType.runner_server_error ?? 0;
    assert.ok(injected >= 1, 'fal failed some requests with runner_server_error (else the test shows nothing)');
    assert.deepEqual([run.state, run.completed, run.failed], ['finished', rows, 0], 'every row completed');

    const report = await reportOf(t.pb, runId);
    const attempts = report.reduce((n, r) => n + Number(r.attempts), 0);
    assert.equal(attempts, rows + injected, 'each failure became one more attempt of its row');
    assert.ok(report.every((r) => r.status === 'completed' && r.error_type === '' && r.error_category === ''));
    const retried = report.find((r) => Number(r.attempts) > 1)!;
    const m = (await meta(t, runId, retried.row_key!))!;
    assert.equal(m.attempt_errors.length, m.attempts - 1, 'every failed attempt is in the metadata');
    assert.deepEqual([m.attempt_errors[0]!.error_type, m.attempt_errors[0]!.error_category], ['runner_server_error', 'fal_transient']);
    assert.equal(m.request_ids.length, m.attempts, 'each attempt was a request of its own');

    const summary = (await summaryOf(t, runId))!;
    assert.equal(summary.submits, rows + injected, 'the extra attempts are counted in submits');
    assert.equal(summary.cost, rows, 'fal does not bill server errors: the cost is one request a row');
    assert.equal(summary.submittedCost, rows + injected, 'what was submitted, billed or not');
    assert.deepEqual(summary.failedByCategory, {});
    const audit = await audited(t, runId);
    assert.equal(audit.completed, rows);
    assert.equal(audit.attempts, rows + injected, 'the audit counts every attempt');
  } finally {
    await t.stop();
  }
});

test('422 image_load_error and content_policy_violation fail at once with their category; retry --only picks categories', async () => {
  const t = await startTestStack({
    // PREFLIGHT off: the face is on loopback, which preflight refuses; here fal's own verdict is the subject.
    env: { MAX_ATTEMPTS: '3', PRICE_PER_MEGAPIXEL: '1', FAL_CONCURRENCY: '8', PREFLIGHT: 'off' },
    emulator: { seed: 7, faults: { errorRates: { image_load_error: 0.3, content_policy_violation: 0.3 } } },
  });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 16, await httpFace()));
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    const byType = t.local.emulator!.stats().errorsByType;
    assert.ok((byType.image_load_error ?? 0) >= 1 && (byType.content_policy_violation ?? 0) >= 1, `both kinds met (${JSON.stringify(byType)})`);
    const report = await reportOf(t.pb, runId);
    const failed = report.filter((r) => r.status === 'failed');
    assert.equal(failed.length, (byType.image_load_error ?? 0) + (byType.content_policy_violation ?? 0), 'one failure per injected error: none retried');
    for (const r of failed) {
      assert.equal(r.attempts, '1', `${r.row_key} failed at once`);
      const expected = r.error_type === 'image_load_error' ? 'input' : r.error_type === 'content_policy_violation' ? 'content_policy' : 'unexpected';
      assert.equal(r.error_category, expected, `${r.row_key}: ${r.error_type}`);
      assert.match(r.error!, /emulated fault/);
    }
    const summary = (await summaryOf(t, runId))!;
    assert.deepEqual(summary.failedByCategory, { input: byType.image_load_error, content_policy: byType.content_policy_violation });
    assert.deepEqual((await t.pb.status(runId))!.failedByCategory, summary.failedByCategory, 'status --json says the same');
    assert.equal(summary.cost, 16, 'a 422 may be billed: its estimate stays');
    const m = (await meta(t, runId, failed[0]!.row_key!))!;
    assert.deepEqual([m.error_type, m.error_category, m.attempt_errors.length], [failed[0]!.error_type, failed[0]!.error_category, 1]);
    await audited(t, runId);
    assert.equal(run.failed, failed.length);

    // Only the content-policy rows run again.
    t.local.emulator!.setFaults({ errorRates: {} });
    await assert.rejects(t.pb.retryFailed(runId, { only: ['bogus' as never] }), /"bogus" is not an error category/);
    const retry = await t.pb.retryFailed(runId, { only: ['content_policy'] });
    assert.equal(retry.rows, byType.content_policy_violation);
    const again = await t.pb.waitForRun(retry.runId, { timeoutMs: 60_000 });
    assert.equal(again.completed, byType.content_policy_violation);
    const retriedKeys = (await reportOf(t.pb, retry.runId)).map((r) => r.row_key);
    assert.deepEqual(retriedKeys, failed.filter((r) => r.error_category === 'content_policy').map((r) => r.row_key));
    await assert.rejects(t.pb.retryFailed(runId, { only: ['timeout'] }), /no failed rows to retry in timeout/);
  } finally {
    await t.stop();
  }
});

test('a request queued past its start timeout fails with the timeout reason, is not resubmitted, and costs nothing', async () => {
  // One slot at fal: the first row runs 4.5 s, the second waits past its 2 s start timeout (QUEUE_DEADLINE_MS).
  const t = await startTestStack({
    // No sweep while it runs: the reconciler's own queue deadline (a backstop) must not answer for fal.
    env: { QUEUE_DEADLINE_MS: '2500', RECONCILE_INTERVAL_MS: '600000', MAX_ATTEMPTS: '3', PRICE_PER_MEGAPIXEL: '1', FAL_CONCURRENCY: '2', SUBMIT_CONCURRENCY: '1' },
    emulator: { slots: 1, latencyMs: { min: 4500, max: 4500 } },
  });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 2));
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed], [1, 1]);
    const failed = (await reportOf(t.pb, runId)).find((r) => r.status === 'failed')!;
    assert.match(failed.error!, /fal did not start it within QUEUE_DEADLINE_MS \(2500 ms\)/);
    assert.deepEqual([failed.error_type, failed.error_category, failed.attempts], ['start_timeout', 'timeout', '1']);
    const stats = t.local.emulator!.stats();
    assert.equal(stats.startTimeouts, 1, 'fal (the emulator) ended it for its start timeout');
    assert.equal(stats.acceptedByRow[`${runId}/${failed.row_key!}`], 1, 'not resubmitted');
    const summary = (await summaryOf(t, runId))!;
    assert.deepEqual(summary.failedByCategory, { timeout: 1 });
    assert.deepEqual([summary.cost, summary.submittedCost], [1, 2], 'a start timeout is not billed');
    await audited(t, runId);
  } finally {
    await t.stop();
  }
});

test('a COMPLETED request whose result fal no longer keeps ends "result expired" and is not paid twice', async () => {
  // No webhook ever comes, so the reconciler asks fal after the grace period: by then fal (payload
  // storage off, results kept 50 ms) answers COMPLETED to status and 404 to result.
  const t = await startTestStack({
    env: { MAX_ATTEMPTS: '3', PRICE_PER_MEGAPIXEL: '1' },
    emulator: { resultRetention: { payloadStorage: false, keptMs: 50, largeKeptMs: 50 }, faults: { webhookDropRate: 1 } },
  });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 2));
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed], [0, 2]);
    for (const r of await reportOf(t.pb, runId)) {
      assert.match(r.error!, /^result expired: /);
      assert.deepEqual([r.error_type, r.error_category, r.attempts], ['result_expired', 'storage', '1']);
    }
    const stats = t.local.emulator!.stats();
    assert.ok(stats.resultsExpired >= 2);
    assert.equal(stats.accepted, 2, 'never resubmitted: fal billed each once');
    assert.equal(stats.billed, 2);
    await audited(t, runId);
  } finally {
    await t.stop();
  }
});

test('RESUBMIT_EXPIRED=true: an expired result is resubmitted as a new attempt, within MAX_ATTEMPTS', async () => {
  const t = await startTestStack({
    env: { MAX_ATTEMPTS: '2', RESUBMIT_EXPIRED: 'true' },
    emulator: { resultRetention: { payloadStorage: false, keptMs: 50, largeKeptMs: 50 }, faults: { webhookDropRate: 1 } },
  });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 1));
    const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.equal(run.failed, 1);
    const m = (await meta(t, runId, 'r0'))!;
    assert.equal(m.attempts, 2, 'resubmitted once, by choice');
    assert.match(m.error!, /result expired.*gave up after 2 fal requests/);
    assert.deepEqual([m.error_type, m.error_category], ['result_expired', 'storage']);
    assert.deepEqual(m.attempt_errors.map((e) => e.error_type), ['result_expired', 'result_expired']);
    assert.equal(t.local.emulator!.stats().accepted, 2);
    await audited(t, runId);
  } finally {
    await t.stop();
  }
});

test('poll mode reads the same from the result call: server errors become new attempts, 422s fail at once', async () => {
  const rows = 12;
  const t = await startTestStack({
    env: { RESULT_DELIVERY: 'poll', MAX_ATTEMPTS: '3', FAL_CONCURRENCY: '8', PREFLIGHT: 'off' },
    emulator: { seed: 5, faults: { errorRates: { runner_server_error: 0.2, image_load_error: 0.15 } } },
  });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, rows, await httpFace()));
    const run = await t.pb.waitForRun(runId, { timeoutMs: 90_000 });
    const byType = t.local.emulator!.stats().errorsByType;
    assert.ok((byType.runner_server_error ?? 0) >= 1 && (byType.image_load_error ?? 0) >= 1, JSON.stringify(byType));
    assert.equal(t.local.emulator!.stats().webhooksSent, 0, 'no webhook: every outcome came from status and result calls');
    const report = await reportOf(t.pb, runId);
    const failed = report.filter((r) => r.status === 'failed');
    assert.equal(failed.length, byType.image_load_error, 'only the 422s failed');
    assert.ok(failed.every((r) => r.error_type === 'image_load_error' && r.error_category === 'input'));
    assert.equal(run.completed + run.failed, rows);
    assert.equal(report.reduce((n, r) => n + Number(r.attempts), 0), rows + (byType.runner_server_error ?? 0));
    await audited(t, runId);
  } finally {
    await t.stop();
  }
});
