// Redis failing under the service, on the real stack: a crash that restarts Redis from an AOF missing
// its last writes (what `appendfsync everysec` risks on a host crash), a SIGKILL and a SIGSTOP. Each
// run ends with every row completed once, fal paid once per row, and the run's counters, report and
// metadata agreeing (the chaos audit). Only the redis-server this test started is killed, by its pid.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { auditRun } from '../src/audit.ts';
import { StackFaults } from '../src/local/stackFaults.ts';
import { waitForRun } from '../src/producer/wait.ts';
import type { RowMeta } from '../src/worker/flush.ts';
import { runLayout } from '../src/core/layout.ts';
import { startEmulator } from '../src/emulator/index.ts';
import { captureLog } from './helpers/captureLog.ts';
import { eventually } from './helpers/eventually.ts';
import { writeFaces } from './helpers/faces.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

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
  const log = captureLog();
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
    await eventually(async () => (await t.ctx.rows.getRun(runId))!.submits === rows && t.local.emulator!.stats().accepted === rows, 'every row claimed and submitted', 60_000);
    await eventually(async () => (await t.ctx.rows.activeRowKeys(runId)).length === rows, 'every submission recorded', 60_000);
    assert.equal(t.local.emulator!.stats().completed, 0, 'no result yet: the requests are in flight at fal');

    await faults.redisRestoreFrom(beforeClaims);
    assert.notEqual(faults.redisPid, pid);
    // The restarted Redis lost every claim: the worker wrote every one of them back (a claim Redis still
    // has is not counted). Read from its line, not from Redis, which the write-back may have refilled already.
    const writeBack = await eventually(() => log.lines.find((l) => l.claimsWrittenBack !== undefined), "the worker's write-back after the restart");
    assert.equal(writeBack.claimsWrittenBack, rows, 'the restarted Redis lost every claim');
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

// The kill can land between Redis running (and fsyncing) a claim and its reply: ioredis sends the claim
// again to the restarted Redis, which answers it as the same claim (test/redis-replies-lost.test.ts).
test('redis-kill: Redis SIGKILLed mid-run and started again on its AOF (fsync always): nothing lost or paid twice', { timeout: 120_000 }, async () => {
  const t = await startTestStack({ persistentRedis: true, env: ENV, policy: POLICY, emulator: { latencyMs: { min: 300, max: 800 }, slots: 8 } });
  const faults = new StackFaults({ redis: t.local.redis!, redisDir: join(t.dir, 'redis') });
  try {
    const rows = 30;
    const runId = 'kill';
    await t.pb.startRun(await manifestOf(t, rows), { runId });
    await eventually(async () => ((await t.ctx.rows.getRun(runId))?.completed ?? 0) >= 5, 'a few rows completed', 60_000);
    await faults.redisKill(1000);
    await assertPaidOnce(t, runId, rows);
  } finally {
    await t.stop();
    await faults.stop();
  }
});

/**
 * fal's queue in front of the emulator, holding the first submission until `answer()` and then
 * refusing it with a 503 (fal did not take it: its claim is taken back).
 */
async function heldSubmitGate(target: string) {
  const up = new URL(target);
  let held: { res: ServerResponse; seen: () => void } | undefined;
  let first = true;
  let seen!: () => void;
  const arrived = new Promise<void>((r) => (seen = r));
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    if (first && req.method === 'POST' && !req.url?.startsWith('/storage')) {
      first = false;
      req.resume();
      held = { res, seen };
      return seen();
    }
    const out = request({ host: up.hostname, port: up.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      pipeline(answer, res).catch(() => undefined);
    });
    out.on('error', () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
    pipeline(req, out).catch(() => undefined);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    arrived,
    answer() {
      held?.res.writeHead(503, { 'content-type': 'application/json' }).end(JSON.stringify({ detail: 'held, then refused' }));
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

test('redis-kill while fal refuses a claimed submission: the release waits for Redis, and the write-back after the restart leaves it alone (appendfsync always loses nothing)', { timeout: 120_000 }, async () => {
  // The chaos redis-kill run's "6 claims written back" under fsync always: a release sent while Redis
  // was away ran after the restart, just before the write-back of the same claim, which raised the
  // row again to an attempt nobody submitted (counted; the reconciler then submitted another).
  const emulator = await startEmulator({ sizeScale: 0.125, latencyMs: { min: 5, max: 30 }, slots: 8, seed: 1 });
  const gate = await heldSubmitGate(emulator.url);
  const log = captureLog();
  const fal = { FAL_QUEUE_URL: gate.url, FAL_JWKS_URL: emulator.jwksUrl, FAL_KEY: 'emulator-key', RESULT_HOSTS: new URL(emulator.url).host, FAL_CONCURRENCY: '8' };
  const t = await startTestStack({ persistentRedis: true, env: { ...fal, LOG_LEVEL: 'info' }, policy: POLICY, log });
  const faults = new StackFaults({ redis: t.local.redis!, redisDir: join(t.dir, 'redis') });
  try {
    const { runId } = await t.pb.startRun(await manifestOf(t, 1));
    await gate.arrived; // claimed, and its submission is on its way to fal
    const killed = once(t.local.redis!.process, 'exit');
    const restarted = faults.redisKill(1500);
    await killed;
    gate.answer(); // fal refuses it while Redis is away: the release waits for Redis
    await restarted;
    const writeBack = await eventually(() => log.lines.find((l) => l.claimsWrittenBack !== undefined), 'the write-back after the restart');
    assert.equal(writeBack.claimsWrittenBack, 0, `Redis lost nothing, so nothing is written back: ${writeBack.msg}`);
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed], [1, 0]);
    assert.equal(emulator.stats().accepted, 1);
    assert.equal(run.submits, 1, 'one submission counted, the one fal accepted');
  } finally {
    await t.stop();
    await faults.stop();
    await gate.close();
    await emulator.close();
  }
});

test('redis-stall: Redis stopped (SIGSTOP) for 3 s mid-run: the run goes on after it, nothing lost or paid twice', { timeout: 120_000 }, async () => {
  const t = await startTestStack({ persistentRedis: true, env: ENV, policy: POLICY, emulator: { latencyMs: { min: 300, max: 800 }, slots: 8 } });
  const faults = new StackFaults({ redis: t.local.redis!, redisDir: join(t.dir, 'redis') });
  try {
    const rows = 30;
    const runId = 'stall';
    await t.pb.startRun(await manifestOf(t, rows), { runId });
    await eventually(async () => ((await t.ctx.rows.getRun(runId))?.completed ?? 0) >= 5, 'a few rows completed', 60_000);
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
    }, 'the row submitted', 60_000);
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
