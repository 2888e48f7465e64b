// Outages of what the service depends on, on the real stack: S3 stopped and started again, fal (the
// emulator) unreachable and back, fal restarted without its requests, the webhook receiver down. Rows
// wait instead of failing; an outage is one warning and one recovery line; /readyz, the metric and
// `status` say what the run waits for while it lasts.
import assert from 'node:assert/strict';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { DestinationStream } from 'pino';
import { createServer } from 'node:net';
import { loadConfig } from '../src/core/config.ts';
import { createContext } from '../src/core/context.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { readOutages } from '../src/core/dependencies.ts';
import { startEmulator, type EmulatorOptions, type RunningEmulator } from '../src/emulator/index.ts';
import { startS3Server, type RunningS3 } from '../src/local/s3Server.ts';
import { readiness } from '../src/ops/health.ts';
import { produceRun } from '../src/producer/produce.ts';
import { waitForRun } from '../src/producer/wait.ts';
import { formatStatus, runStatus } from '../src/status.ts';
import { eventually } from './helpers/eventually.ts';
import { writeFaces } from './helpers/faces.ts';
import { startTestStack, TEST_POLICY, type TestStack } from './helpers/stack.ts';

interface LogLine {
  level: number;
  msg: string;
  dependency?: string;
  [k: string]: unknown;
}

/** A log destination that keeps every line (pino writes one JSON object per call). */
function captureLog(): DestinationStream & { lines: LogLine[]; said(pattern: RegExp, minLevel?: number): LogLine[] } {
  const lines: LogLine[] = [];
  return {
    lines,
    write(s: string) {
      for (const l of s.split('\n').filter(Boolean)) lines.push(JSON.parse(l) as LogLine);
    },
    said: (pattern, minLevel = 40) => lines.filter((l) => l.level >= minLevel && pattern.test(l.msg)),
  };
}

const EMULATOR: EmulatorOptions = { sizeScale: 0.125, latencyMs: { min: 5, max: 30 }, slots: 8, seed: 1 };

/** The same emulator options on the same port: fal back (without whatever the closed one held). */
function restartEmulator(t: TestStack, opts: EmulatorOptions = {}): Promise<RunningEmulator> {
  return startEmulator({ ...EMULATOR, ...opts, port: t.local.emulator!.port });
}

/** The embedded S3 again, on its port and directory: the objects written before are still there. */
function restartS3(t: TestStack): Promise<RunningS3> {
  return startS3Server({ dir: join(t.dir, 's3'), port: t.local.s3!.port, buckets: [t.ctx.cfg.S3_BUCKET] });
}

async function manifestOf(t: TestStack, rows: number): Promise<string> {
  await writeFaces(join(t.dir, 'faces'), 3);
  const lines = ['id,face_url', ...Array.from({ length: rows }, (_, i) => `r${i},faces/face-${i % 3}.png`)];
  return t.manifest('outage.csv', `${lines.join('\n')}\n`);
}

async function rowStates(t: TestStack, runId: string): Promise<string[]> {
  const keys = await t.ctx.rows.activeRowKeys(runId);
  return Promise.all(keys.map(async (k) => (await t.ctx.rows.getRow(runId, k))?.state ?? 'gone'));
}

async function dependencyUp(t: TestStack, dep: string): Promise<string | undefined> {
  const text = await t.ctx.metrics.registry.metrics();
  return new RegExp(`^portrait_batch_dependency_up\\{dependency="${dep}"\\} (\\d)$`, 'm').exec(text)?.[1];
}

test('S3 stopped mid-run: submissions pause, finished results wait, every row completes once S3 is back; one warning, one recovery line', async () => {
  const log = captureLog();
  const t = await startTestStack({ env: { LOG_LEVEL: 'info' }, emulator: { latencyMs: { min: 300, max: 700 } }, log });
  let s3: RunningS3 | undefined;
  try {
    const { runId } = await produceRun(t.ctx, await manifestOf(t, 12));
    await eventually(() => t.local.emulator!.stats().accepted >= 4, 'a few rows accepted by fal');
    await t.local.s3!.close();

    await eventually(() => t.ctx.dependencies.isDown('s3'), 'the S3 outage noticed', 30_000);
    await eventually(async () => (await rowStates(t, runId)).includes('storing'), 'a result fal finished waiting for S3', 30_000);
    assert.equal(await t.ctx.queues.submit.isPaused(), true, 'submissions paused globally');
    const ready = await readiness(t.ctx);
    assert.equal(ready.ready, false);
    assert.ok(ready.down.includes('s3'), `readyz names S3: ${JSON.stringify(ready)}`);
    assert.equal(await dependencyUp(t, 's3'), '0');
    assert.equal(await dependencyUp(t, 'fal'), '1');
    const status = (await runStatus(t.ctx, runId))!;
    assert.deepEqual(status.waitingFor.map((w) => w.dependency), ['s3']);
    assert.match(formatStatus(status), /waiting for S3 since \d{4}-\d\d-\d\dT/);
    assert.equal((await t.ctx.rows.getRun(runId))!.failed, 0, 'nothing failed while S3 was down');

    s3 = await restartS3(t);
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 90_000 });
    assert.deepEqual([run.completed, run.failed], [12, 0]);
    assert.equal(await t.ctx.queues.submit.isPaused(), false, 'submissions resumed by themselves');
    assert.equal(await dependencyUp(t, 's3'), '1');
    assert.equal((await readiness(t.ctx)).ready, true);
    assert.equal(log.said(/^S3 unreachable/).length, 1, 'one warning for the outage');
    assert.equal(log.said(/^S3 reachable again after/).length, 1, 'one line when it is back');
    assert.deepEqual(log.said(/job failed|reconciling a row failed/), [], 'no line per job or per row');
  } finally {
    if (process.env.DUMP_LOG) console.log(log.lines.map((l) => `${l.level} ${l.msg} ${JSON.stringify(l).slice(0, 300)}`).join('\n'));
    await t.stop();
    await s3?.close();
  }
});

test('S3 down past a row deadline: a result fal finished fails only then, with the stored-result reason', async () => {
  const t = await startTestStack({ env: { ROW_DEADLINE_MS: '4000', STORE_RETRY_WINDOW: '1s' }, emulator: { latencyMs: { min: 1200, max: 1500 } } });
  let s3: RunningS3 | undefined;
  try {
    const { runId } = await produceRun(t.ctx, await manifestOf(t, 2));
    await eventually(() => t.local.emulator!.stats().accepted === 2, 'both rows accepted by fal');
    await t.local.s3!.close();
    const failed = await eventually(async () => {
      const rows = await Promise.all(['r0', 'r1'].map((k) => t.ctx.rows.getRow(runId, k)));
      return rows.every((r) => r?.state === 'failed') ? rows : undefined;
    }, 'both rows failed at their deadline', 30_000);
    for (const row of failed) {
      assert.match(row!.error ?? '', /^stored result could not be written to S3 by \d{4}-\d\d-\d\dT[\d:.]+Z/);
      assert.ok(row!.finishedAt! - row!.storingSince! >= 4000, 'not before ROW_DEADLINE_MS after the result arrived');
    }
    s3 = await restartS3(t);
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed], [0, 2]);
  } finally {
    await t.stop();
    await s3?.close();
  }
});

test('fal unreachable for longer than the old 8 tries: rows that never reached fal wait, then complete', async () => {
  const log = captureLog();
  const t = await startTestStack({ env: { LOG_LEVEL: 'info' }, log });
  let fal: RunningEmulator | undefined;
  try {
    await t.local.emulator!.close();
    const { runId } = await produceRun(t.ctx, await manifestOf(t, 10));
    await eventually(() => t.ctx.dependencies.isDown('fal'), 'the fal outage noticed');
    // The pause follows the outage's record in Redis (the tracker's hook): awaited, not assumed.
    await eventually(() => t.ctx.queues.submit.isPaused(), 'submissions paused');
    assert.deepEqual((await runStatus(t.ctx, runId))!.waitingFor.map((w) => w.dependency), ['fal']);
    assert.equal(await dependencyUp(t, 'fal'), '0');
    // Eight tries with the test backoff (0.1 s doubling to 0.8 s) took under 4 s: wait out twice that.
    const since = Date.parse((await runStatus(t.ctx, runId))!.waitingFor[0]!.since);
    await eventually(() => Date.now() - since > 8000, 'an outage longer than eight tries', 20_000, 250);
    assert.equal((await t.ctx.rows.getRun(runId))!.failed, 0);

    fal = await restartEmulator(t);
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed], [10, 0]);
    // (On a loaded machine a submission can time out just as fal comes back: ambiguous, resubmitted after the grace.)
    assert.equal(Object.keys(fal.stats().acceptedByRow).length, 10, 'every row reached fal once it was back');
    assert.equal(log.said(/^fal unreachable/).length, 1);
    assert.equal(log.said(/^fal reachable again after \d+s/).length, 1);
    assert.deepEqual(log.said(/job failed/), []);
  } finally {
    await t.stop();
    await fal?.close();
  }
});

test('fal restarted without its requests: the forgotten requests are resubmitted (their faces uploaded again) and every row completes', async () => {
  const t = await startTestStack({ emulator: { latencyMs: { min: 2000, max: 3000 } } });
  let fal: RunningEmulator | undefined;
  try {
    const { runId } = await produceRun(t.ctx, await manifestOf(t, 6));
    await eventually(() => t.local.emulator!.stats().accepted === 6, 'every row accepted by fal');
    await t.local.emulator!.close();
    fal = await restartEmulator(t);
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 90_000 });
    assert.deepEqual([run.completed, run.failed], [6, 0]);
    const lost = (await t.ctx.metrics.registry.getSingleMetric('portrait_batch_reconciler_resubmits_total')!.get()).values[0]!.value;
    assert.equal(lost, 6, 'each request the restarted fal forgot is resubmitted by the reconciler, counted apart');
    const stats = fal.stats();
    // A resubmission handed fal the old fal-storage copy of its face: refused once, uploaded again, then done.
    assert.equal(stats.failed, stats.storageUploads, 'every face refused was uploaded again, once');
    assert.equal(run.submits, 6 + 6 + stats.failed, 'submissions: the first, the resubmission, and one per refused face');
  } finally {
    await t.stop();
    await fal?.close();
  }
});

test('fal restarted after finishing results not yet stored: their files are gone, so each is resubmitted as a new attempt, counted apart, never paid twice', async () => {
  const t = await startTestStack();
  let fal: RunningEmulator | undefined;
  try {
    // Results are recorded but not stored (their queue paused) while fal finishes every row, then fal restarts without them.
    await t.ctx.queues.results.pause();
    const { runId } = await produceRun(t.ctx, await manifestOf(t, 6));
    await eventually(() => t.local.emulator!.stats().webhooksDelivered >= 6, 'every result delivered by webhook');
    await eventually(async () => (await t.ctx.queues.results.getWaitingCount()) >= 6, 'every result job queued');
    const first = t.local.emulator!.stats().acceptedByRow;
    await t.local.emulator!.close();
    fal = await restartEmulator(t);
    await t.ctx.queues.results.resume();
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 90_000 });
    assert.deepEqual([run.completed, run.failed], [6, 0]);
    assert.equal(run.resubmittedForgotten, 6, 'each finished request fal forgot was resubmitted, counted apart');
    // fal accepted each row once before its restart and again after: one request per recorded attempt, none paid twice.
    for (let i = 0; i < 6; i++) {
      const row = (await t.ctx.rows.getRow(runId, `r${i}`)) ?? undefined;
      const key = `${runId}/r${i}`;
      const accepted = (first[key] ?? 0) + (fal.stats().acceptedByRow[key] ?? 0);
      assert.ok(row === undefined || accepted <= row.attempt, `row r${i}: ${accepted} accepted for ${row?.attempt} attempts`);
      assert.equal(first[key], 1, `row r${i} was accepted once before the restart`);
    }
    assert.equal(run.submits, 6 + Object.values(fal.stats().acceptedByRow).reduce((a, b) => a + b, 0), 'every request fal accepted is a recorded submission');
  } finally {
    await t.stop();
    await fal?.close();
  }
});

test('fal (and its file host) down while finished results are stored: the downloads wait it out without using up STORE_MAX_TRIES or logging per try', async () => {
  const log = captureLog();
  const stateDir = join(tmpdir(), `pb-fal-state-${process.pid}-${Date.now()}`);
  const t = await startTestStack({ env: { LOG_LEVEL: 'info', STORE_MAX_TRIES: '2' }, emulator: { stateDir }, log });
  let fal: RunningEmulator | undefined;
  try {
    await t.ctx.queues.results.pause();
    const { runId } = await produceRun(t.ctx, await manifestOf(t, 6));
    await eventually(() => t.local.emulator!.stats().webhooksDelivered >= 6, 'every result delivered by webhook');
    await eventually(async () => (await t.ctx.queues.results.getWaitingCount()) >= 6, 'every result job queued');
    await t.local.emulator!.close();
    await t.ctx.queues.results.resume();
    await eventually(() => t.ctx.dependencies.isDown('fal'), 'the fal outage noticed', 30_000);
    // Two tries with the test backoff take well under a second: wait out several times that.
    const since = Date.now();
    await eventually(() => Date.now() - since > 4000, 'an outage longer than two store tries', 20_000, 250);
    assert.equal((await t.ctx.rows.getRun(runId))!.failed, 0, 'no row failed while fal was down');
    // Back with its requests and files (its state kept), as after a short outage.
    fal = await restartEmulator(t, { stateDir });
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed, run.resubmittedForgotten], [6, 0, 0]);
    assert.deepEqual(log.said(/job failed/), [], 'no line per failed download');
    assert.equal(log.said(/^fal unreachable/).length, 1);
  } finally {
    await t.stop();
    await fal?.close();
    await rm(stateDir, { recursive: true, force: true });
  }
});

test('webhook receiver down: the reconciler finds every result by polling fal', async () => {
  const t = await startTestStack();
  try {
    await t.webhook!.close();
    const { runId } = await produceRun(t.ctx, await manifestOf(t, 6));
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed, run.submits], [6, 0, 6]);
    assert.equal(t.local.emulator!.stats().webhooksDelivered, 0, 'no webhook reached us');
  } finally {
    await t.stop();
  }
});

test('several processes see S3 go down: the first one warns, the others adopt its outage quietly; one recovery line in all', async () => {
  const t = await startTestStack({ workers: false, webhook: false });
  const port = await new Promise<number>((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
  // Three processes whose S3 is at an address where nothing listens yet.
  const env = { ...t.local.env, S3_ENDPOINT: `http://127.0.0.1:${port}`, LOG_LEVEL: 'debug' };
  const logs = [captureLog(), captureLog(), captureLog()];
  const ctxs = logs.map((log, i) => createContext(loadConfig(env), `process-${i}`, TEST_POLICY, { log, metrics: () => createMetrics() }));
  let s3: RunningS3 | undefined;
  try {
    for (const c of ctxs) c.dependencies.down('s3', new Error('connect ECONNREFUSED'));
    await eventually(async () => (await readOutages(t.ctx.redis)).some((o) => o.dependency === 's3'), 'the outage recorded in Redis');
    await eventually(async () => (await t.ctx.queues.submit.isPaused()) === true, 'submissions paused');
    assert.deepEqual((await t.ctx.dependencies.outages()).map((o) => o.dependency), ['s3'], 'a process that saw nothing itself knows it too');
    s3 = await startS3Server({ dir: join(t.dir, 's3-other'), port, buckets: [t.ctx.cfg.S3_BUCKET] });
    await eventually(() => ctxs.every((c) => !c.dependencies.isDown('s3')), 'every process saw S3 back');
    await eventually(async () => (await t.ctx.queues.submit.isPaused()) === false, 'submissions resumed');
    const said = (re: RegExp) => logs.flatMap((l) => l.said(re)).length;
    assert.equal(said(/^S3 unreachable/), 1, 'one warning across the processes');
    assert.equal(said(/^S3 reachable again/), 1, 'one recovery line across the processes');
    assert.equal(logs.flatMap((l) => l.said(/^S3 unreachable .*already reported/, 20)).length, 2, 'the others said it at debug level');
    assert.deepEqual(await readOutages(t.ctx.redis), []);
  } finally {
    for (const c of ctxs) await c.close();
    await s3?.close();
    await t.stop();
  }
});
