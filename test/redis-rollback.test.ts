// Redis failing under the service, on the real stack: a crash that restarts Redis from an AOF missing
// its last writes (what `appendfsync everysec` risks on a host crash), a SIGKILL and a SIGSTOP. Each
// run ends with every row completed once, fal paid once per row, and the run's counters, report and
// metadata agreeing (the chaos audit). Only the redis-server this test started is killed, by its pid.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { auditRun } from '../src/audit.ts';
import { StackFaults } from '../src/local/stackFaults.ts';
import { waitForRun } from '../src/producer/wait.ts';
import type { RowMeta } from '../src/worker/flush.ts';
import { runLayout } from '../src/core/layout.ts';
import { writeFaces } from './helpers/faces.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

/** Waits for `cond`, failing with `what` after `ms`. */
async function eventually(cond: () => Promise<boolean> | boolean, what: string, ms = 60_000): Promise<void> {
  const until = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > until) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(50);
  }
}

/** A log destination that keeps every line. */
function logLines(): { lines: string[]; write(line: string): void } {
  const lines: string[] = [];
  return { lines, write: (line) => void lines.push(line) };
}

/** claimsWrittenBack of the first write-back after a Redis restart logged, if one was. */
function writtenBack(lines: string[]): number | undefined {
  for (const line of lines) {
    const n = (JSON.parse(line) as { claimsWrittenBack?: number }).claimsWrittenBack;
    if (n !== undefined) return n;
  }
  return undefined;
}

async function manifestOf(t: TestStack, rows: number): Promise<string> {
  const faces = await writeFaces(t.dir, 4);
  const lines = ['id,face_url'];
  for (let i = 0; i < rows; i++) lines.push(`r${i},${faces[i % faces.length]}`);
  return t.manifest('rows.csv', `${lines.join('\n')}\n`);
}

/** Every row completed once, fal accepted each row once, and Redis, the report and the metadata agree. */
async function assertPaidOnce(t: TestStack, runId: string, rows: number): Promise<void> {
  await waitForRun(t.ctx, runId, { timeoutMs: 90_000 });
  const stats = t.local.emulator!.stats();
  const audit = await auditRun(t.ctx, runId, { acceptedByRow: stats.acceptedByRow, verifyHashes: true });
  assert.deepEqual(audit.problems, []);
  assert.equal(audit.completed, rows);
  assert.equal(audit.extraSubmits, 0, 'no row paid twice');
  assert.equal(stats.accepted, rows, `fal accepted ${stats.accepted} submissions for ${rows} rows`);
  const run = (await t.ctx.rows.getRun(runId))!;
  assert.equal(run.submits, rows, 'the run counts every submission, none twice');
  assert.equal(run.completed, rows);
}

/** A loaded machine may take seconds to hand a face to fal: no submission is taken for lost meanwhile. */
const ENV = { RECONCILE_GRACE_MS: '30000' };
const POLICY = { redisRestart: { holdMs: 1500, rememberMs: 30_000 } };

test('redis-crash: Redis restarts from an AOF that lost every claim; claims are adopted back, nothing is paid twice', { timeout: 120_000 }, async () => {
  // Generations take a few seconds, so every request is on fal when Redis loses its claims.
  const log = logLines();
  const t = await startTestStack({ persistentRedis: true, workers: false, env: { ...ENV, LOG_LEVEL: 'info' }, log, policy: POLICY, emulator: { latencyMs: { min: 8000, max: 10_000 }, slots: 16 } });
  const faults = new StackFaults({ redis: t.local.redis!, redisDir: join(t.dir, 'redis') });
  try {
    const rows = 12;
    const runId = 'crash';
    await t.pb.startRun(await manifestOf(t, rows), { runId });
    // The AOF as it stands now (the run recorded, nothing claimed): what the crash leaves on disk.
    const pid = faults.redisPid;
    const beforeClaims = await faults.copyAof();
    await t.pb.startWorkers();
    await eventually(async () => (await t.ctx.rows.getRun(runId))!.submits === rows && t.local.emulator!.stats().accepted === rows, 'every row claimed and submitted');
    await eventually(async () => (await t.ctx.rows.activeRowKeys(runId)).length === rows, 'every submission recorded');
    assert.equal(t.local.emulator!.stats().completed, 0, 'no result yet: the requests are in flight at fal');

    await faults.redisRestoreFrom(beforeClaims);
    assert.notEqual(faults.redisPid, pid);
    // The restarted Redis lost every claim: the worker wrote every one of them back (a claim Redis still
    // has is not counted). Read from its line, not from Redis, which the write-back may have refilled already.
    await eventually(() => writtenBack(log.lines) !== undefined, "the worker's write-back after the restart");
    assert.equal(writtenBack(log.lines), rows, 'the restarted Redis lost every claim');
    // The worker writes its own claims back, so the restored submit jobs find the rows submitted.
    await assertPaidOnce(t, runId, rows);
    for (let i = 0; i < rows; i++) {
      const meta = await t.ctx.storage.getJson<RowMeta>(runLayout(t.ctx.cfg.S3_PREFIX, runId).meta(`r${i}`));
      assert.equal(meta!.attempts, 1, `r${i}: one attempt`);
      assert.equal(meta!.request_ids.length, 1, `r${i}: one request`);
    }
  } finally {
    // The restored redis-server is the faults' own: left running, it would keep this file from exiting.
    await t.stop();
    await faults.stop();
  }
});

// TODO(#15): in about one run in four the run's `submits` counts 31 for fal's 30 accepted submissions
// (never a row paid twice: the audit's extraSubmits stays 0). Suspected: an attempt claimed just before
// the kill, whose submit never reached fal, is counted and not taken back, or the restart's write-back
// re-applies a claim Redis had kept. Reported as a todo (it runs, and a failure is printed) until fixed.
test('redis-kill: Redis SIGKILLed mid-run and started again on its AOF (fsync always): nothing lost or paid twice', { timeout: 120_000, todo: 'submits over-counted by one in some runs (#15)' }, async () => {
  const t = await startTestStack({ persistentRedis: true, env: ENV, policy: POLICY, emulator: { latencyMs: { min: 300, max: 800 }, slots: 8 } });
  const faults = new StackFaults({ redis: t.local.redis!, redisDir: join(t.dir, 'redis') });
  try {
    const rows = 30;
    const runId = 'kill';
    await t.pb.startRun(await manifestOf(t, rows), { runId });
    await eventually(async () => ((await t.ctx.rows.getRun(runId))?.completed ?? 0) >= 5, 'a few rows completed');
    await faults.redisKill(1000);
    await assertPaidOnce(t, runId, rows);
  } finally {
    await t.stop();
    await faults.stop();
  }
});

test('redis-stall: Redis stopped (SIGSTOP) for 3 s mid-run: the run goes on after it, nothing lost or paid twice', { timeout: 120_000 }, async () => {
  const t = await startTestStack({ persistentRedis: true, env: ENV, policy: POLICY, emulator: { latencyMs: { min: 300, max: 800 }, slots: 8 } });
  const faults = new StackFaults({ redis: t.local.redis!, redisDir: join(t.dir, 'redis') });
  try {
    const rows = 30;
    const runId = 'stall';
    await t.pb.startRun(await manifestOf(t, rows), { runId });
    await eventually(async () => ((await t.ctx.rows.getRun(runId))?.completed ?? 0) >= 5, 'a few rows completed');
    await faults.redisStall(3000);
    await assertPaidOnce(t, runId, rows);
  } finally {
    await t.stop();
    await faults.stop();
  }
});

test('a row back in submitted after a rollback whose result job had finished: the reconciler runs the result again instead of waiting on the finished job', async () => {
  // The state a host crash leaves (chaos redis-crash, 500 rows): the result job finished (its
  // completion reached Redis) while the row it completed was rolled back to `submitted`. Made here
  // by hand: the result job is finished by a worker of the test's own before the sweep looks.
  const t = await startTestStack({ webhook: false });
  const { Worker } = await import('bullmq');
  const { jobIds, QUEUE_NAMES } = await import('../src/core/queues.ts');
  const connection = t.ctx.redis.duplicate();
  const own = new Worker(QUEUE_NAMES.results, null, { connection });
  let more: Awaited<ReturnType<typeof t.pb.startWorkers>> | undefined;
  try {
    await t.ctx.queues.control.pause(); // no sweep until the job is finished
    // The stack's result worker is closed, not paused: a paused worker blocked waiting for a job can
    // still take the first one that arrives (BullMQ), and this job must be finished by the test alone.
    await t.workers!.workers.find((w) => w.name === QUEUE_NAMES.results)!.close();
    const { runId } = await t.pb.startRun(await manifestOf(t, 1));
    let requestId = '';
    await eventually(async () => {
      const row = await t.ctx.rows.getRow(runId, 'r0');
      requestId = row?.state === 'submitted' ? (row.requestId ?? '') : '';
      return requestId !== '';
    }, 'the row submitted');
    await t.ctx.queues.results.add('result', { requestId, status: 'OK', payload: { images: [] }, source: 'poll', receivedAt: Date.now() }, { jobId: jobIds.result(requestId, 'OK') });
    const job = (await own.getNextJob('test-token'))!;
    assert.equal(job.id, jobIds.result(requestId, 'OK'));
    await job.moveToCompleted('completed', 'test-token', false);
    more = await t.pb.startWorkers(); // a result worker again, for the job the reconciler adds
    await t.ctx.queues.control.resume();
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed], [1, 0]);
  } finally {
    await more?.close();
    await own.close();
    connection.disconnect();
    await t.stop();
  }
});
