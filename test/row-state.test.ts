// The row state machine on a real redis-server: each transition, and that no sequence of repeated or
// stale transitions can count a row twice or overwrite a newer outcome.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, test } from 'node:test';
import { Redis } from 'ioredis';
import { startRedisServer, type RunningRedis } from '../src/local/redisServer.ts';
import { lineSelected, RowStore, UnexpectedReplyError, type RowData } from '../src/core/rowState.ts';
import type { RunPolicy } from '../src/core/runPolicy.ts';

let server: RunningRedis;
let redis: Redis;
let rows: RowStore;
let dir: string;
const data: RowData = { faceUrl: 'https://x.example/f.png', faceKind: 'http', input: {}, extra: {} };
/** The run's own policy: the transitions read it from the run, not from the caller. */
const policy: RunPolicy = {
  endpoint: 'fal-ai/x',
  maxAttempts: 3,
  deadlineMs: 60_000,
  queueDeadlineMs: 120_000,
  failureMinRows: 4,
  failureRatio: 0.5,
  maxCost: null,
  pricePerMegapixel: 0.02,
  currency: 'USD',
};
let run = '';
let n = 0;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pb-rows-'));
  server = await startRedisServer({ dir, persistent: false });
  redis = new Redis(server.url);
  rows = new RowStore(redis);
});
after(async () => {
  await redis.quit();
  await server.stop();
  await rm(dir, { recursive: true, force: true });
});
beforeEach(async () => {
  run = `run${++n}`;
  await rows.createRun({ runId: run, manifest: 'm.csv', manifestKey: 'k', options: {}, policy });
});

async function submitted(key: string, line: number, requestId: string) {
  const c = await rows.claimSubmit(run, key, line, data);
  assert.deepEqual(c, { outcome: 'submit', attempt: 1, endpoint: 'fal-ai/x' });
  assert.equal(await rows.recordSubmit(run, key, 1, requestId, Date.now()), 'ok');
}

test('claim records the attempt before submitting; a second claim sees it in flight', async () => {
  assert.deepEqual(await rows.claimSubmit(run, 'a', 2, data), { outcome: 'submit', attempt: 1, endpoint: 'fal-ai/x' });
  assert.equal((await rows.claimSubmit(run, 'a', 2, data)).outcome, 'inflight');
  assert.equal((await rows.getRun(run))!.submits, 1);
});

test('a refused submission is taken back, so the retry is attempt 1 again', async () => {
  await rows.claimSubmit(run, 'a', 2, data);
  assert.equal(await rows.releaseSubmit(run, 'a', 1, 'fal answered 429'), true);
  assert.deepEqual(await rows.claimSubmit(run, 'a', 2, data), { outcome: 'submit', attempt: 1, endpoint: 'fal-ai/x' });
  assert.equal((await rows.getRun(run))!.submits, 1);
});

test('OK result: storing, then completed exactly once whatever repeats', async () => {
  await submitted('a', 2, 'req-1');
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-1', status: 'OK' }), 'store');
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-1', status: 'OK' }), 'store', 'a crashed store may re-enter');
  assert.equal(await rows.completeRow(run, 'a', 'req-1', [], '7', 'p'), true);
  assert.equal(await rows.completeRow(run, 'a', 'req-1', [], '7', 'p'), false);
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-1', status: 'OK' }), 'duplicate');
  assert.equal(await rows.finishRow(run, 'a', 'failed', 'late', ['pending', 'submitting', 'submitted', 'storing']), false);
  assert.equal((await rows.getRun(run))!.completed, 1);
  await rows.forgetRow(run, 'a');
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-1', status: 'OK' }), 'duplicate', 'mapping outlives the row');
  assert.equal((await rows.claimSubmit(run, 'a', 2, data)).outcome, 'terminal', 'the done bit stops a resubmission');
});

test('a webhook that beats the submit response finds its row through the URL hint', async () => {
  await rows.claimSubmit(run, 'a', 2, data);
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-x', hintAttempt: 1, status: 'OK' }), 'store');
  assert.equal(await rows.recordSubmit(run, 'a', 1, 'req-x', Date.now()), 'late');
  assert.equal((await rows.getRow(run, 'a'))!.state, 'storing');
  assert.deepEqual(await rows.lookupRequest('req-x'), { runId: run, key: 'a', attempt: 1 });
});

test('an unknown request is not placed; a hint (a token we minted at submit) for an attempt the row lost is adopted', async () => {
  await rows.claimSubmit(run, 'a', 2, data);
  assert.equal(await rows.recordResult(run, 'nope', { requestId: 'req-z', status: 'OK' }), 'unknown');
  // Attempt 2 was claimed and submitted, then Redis lost that claim: its webhook still lands on the row.
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-y', hintAttempt: 2, status: 'OK' }), 'store');
  const row = (await rows.getRow(run, 'a'))!;
  assert.equal(row.attempt, 2);
  assert.deepEqual(row.requestIds, ['req-y']);
  assert.equal((await rows.getRun(run))!.submits, 2, 'the lost attempt is counted again');
  assert.deepEqual(await rows.lookupRequest('req-y'), { runId: run, key: 'a', attempt: 2 });
});

test('Redis rollback: a recorded submit makes a lost row again; a replayed claim raises it; neither goes back', async () => {
  const claimed = { line: 2, data, costMicros: 500 };
  // The claim and the row were lost: fal's answer makes the row again, submitted, counted.
  assert.equal(await rows.recordSubmit(run, 'a', 1, 'req-a1', Date.now(), claimed), 'adopted');
  let row = (await rows.getRow(run, 'a'))!;
  assert.equal(row.state, 'submitted');
  assert.equal(row.requestId, 'req-a1');
  assert.equal(row.line, 2);
  assert.deepEqual((await rows.getRun(run))!.submits, 1);
  assert.equal((await rows.getRun(run))!.costMicros, 500);
  assert.equal((await rows.claimSubmit(run, 'a', 2, data)).outcome, 'already', 'the restored submit job does not pay again');
  assert.equal(await rows.recordSubmit(run, 'a', 1, 'req-a1', Date.now(), claimed), 'ok', 'a repeat answers as the first time and changes nothing');
  assert.equal((await rows.getRun(run))!.submits, 1);
  // A claim written back by its worker: the row is submitting attempt 1, so no one claims it again.
  assert.equal(await rows.reclaimSubmit(run, 'b', 1, { line: 3, data }), true);
  assert.equal((await rows.getRow(run, 'b'))!.state, 'submitting');
  assert.equal((await rows.claimSubmit(run, 'b', 3, data)).outcome, 'inflight');
  assert.equal(await rows.reclaimSubmit(run, 'b', 1, { line: 3, data }), false);
  // A row that ended is never made again.
  await rows.recordResult(run, 'a', { requestId: 'req-a1', status: 'ERROR', error: 'x' });
  await rows.forgetRow(run, 'a');
  assert.equal(await rows.recordSubmit(run, 'a', 1, 'req-a1', Date.now(), claimed), 'gone');
  assert.equal(await rows.reclaimSubmit(run, 'a', 1, claimed), false);
  row = (await rows.getRow(run, 'a'))!;
  assert.equal(row, undefined);
});

test('Redis rollback: a webhook for a row that is gone is noted, and the claim takes the attempt back instead of paying again', async () => {
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-w', hintAttempt: 1, status: 'OK' }), 'unknown');
  const claim = await rows.claimSubmit(run, 'a', 2, data, 700);
  assert.deepEqual(claim, { outcome: 'adopted', attempt: 1, endpoint: 'fal-ai/x' });
  const row = (await rows.getRow(run, 'a'))!;
  assert.equal(row.state, 'submitted');
  assert.equal(row.requestId, 'req-w');
  assert.equal((await rows.getRun(run))!.submits, 1);
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-w', hintAttempt: 1, status: 'OK' }), 'store', 'the result job, looking again, places it');
  assert.deepEqual(await rows.lookupRequest('req-w'), { runId: run, key: 'a', attempt: 1 });
});

test('Redis rollback: an attempt submitted twice (its first record lost) places both results, the second beside the first', async () => {
  await submitted('a', 2, 'req-second');
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-first', hintAttempt: 1, status: 'OK' }), 'store');
  const row = (await rows.getRow(run, 'a'))!;
  assert.deepEqual(row.requestIds, ['req-second', 'req-first'], 'both paid requests are on the row');
  assert.equal((await rows.getRun(run))!.submits, 2, 'and counted');
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-second', status: 'OK' }), 'duplicate');
});

test('ERROR for the current attempt fails the row; for a superseded attempt it is ignored', async () => {
  await submitted('a', 2, 'req-1');
  assert.equal(await rows.supersede(run, 'a', 'submitted', 1, 'req-1', 'lost'), 'resubmit');
  assert.deepEqual(await rows.claimSubmit(run, 'a', 2, data), { outcome: 'submit', attempt: 2, endpoint: 'fal-ai/x' });
  await rows.recordSubmit(run, 'a', 2, 'req-2', Date.now());
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-1', status: 'ERROR', error: 'old' }), 'ignored');
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-2', status: 'ERROR', error: 'model error' }), 'failed');
  const row = await rows.getRow(run, 'a');
  assert.equal(row!.state, 'failed');
  assert.equal(row!.error, 'model error');
  assert.equal((await rows.getRun(run))!.failed, 1);
});

test('a late OK result of a superseded attempt completes the open row once; the other result is ignored', async () => {
  await submitted('a', 2, 'req-1');
  await rows.supersede(run, 'a', 'submitted', 1, 'req-1', 'lost');
  await rows.claimSubmit(run, 'a', 2, data);
  await rows.recordSubmit(run, 'a', 2, 'req-2', Date.now());
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-1', status: 'OK' }), 'store');
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-2', status: 'OK' }), 'duplicate');
  assert.equal(await rows.completeRow(run, 'a', 'req-2', [], '', ''), false);
  assert.equal(await rows.completeRow(run, 'a', 'req-1', [], '', ''), true);
  assert.equal((await rows.getRun(run))!.completed, 1);
});

test('a completed row, not yet flushed, ignores a superseded attempt\'s late result', async () => {
  await submitted('a', 2, 'req-1');
  await rows.supersede(run, 'a', 'submitted', 1, 'req-1', 'lost');
  await rows.claimSubmit(run, 'a', 2, data);
  await rows.recordSubmit(run, 'a', 2, 'req-2', Date.now());
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-2', status: 'OK' }), 'store');
  assert.equal(await rows.completeRow(run, 'a', 'req-2', [], '7', 'p'), true);
  // Between completion and flush the row is still in Redis: attempt 1's result comes late.
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-1', status: 'OK' }), 'duplicate');
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-1', hintAttempt: 1, status: 'ERROR', error: 'late' }), 'duplicate');
  const row = (await rows.getRow(run, 'a'))!;
  assert.deepEqual([row.state, row.requestId, row.storeRequestId, row.error], ['completed', 'req-2', 'req-2', undefined]);
  assert.equal(await rows.completeRow(run, 'a', 'req-1', [], '8', 'p'), false);
  const r = (await rows.getRun(run))!;
  assert.deepEqual([r.completed, r.failed], [1, 0]);
});

test('the attempt limit ends a row that fal keeps losing', async () => {
  run = `run${++n}`;
  await rows.createRun({ runId: run, manifest: 'm.csv', manifestKey: 'k', options: {}, policy: { ...policy, maxAttempts: 2 } });
  for (let attempt = 1; attempt <= 2; attempt++) {
    assert.deepEqual(await rows.claimSubmit(run, 'a', 2, data), { outcome: 'submit', attempt, endpoint: 'fal-ai/x' });
    await rows.recordSubmit(run, 'a', attempt, `req-${attempt}`, Date.now());
    const out = await rows.supersede(run, 'a', 'submitted', attempt, `req-${attempt}`, 'fal lost it (404)');
    assert.equal(out, attempt === 2 ? 'failed' : 'resubmit');
  }
  const row = await rows.getRow(run, 'a');
  assert.match(row!.error!, /fal lost it \(404\) \(gave up after 2 fal requests\)/);
});

test('finishRow only acts from the states its caller owns', async () => {
  await submitted('a', 2, 'req-1');
  await rows.recordResult(run, 'a', { requestId: 'req-1', status: 'OK' });
  assert.equal(await rows.finishRow(run, 'a', 'failed', 'deadline', ['pending', 'submitting', 'submitted']), false);
  assert.equal(await rows.finishRow(run, 'a', 'failed', 'download', ['storing'], 'req-other'), false);
  assert.equal(await rows.finishRow(run, 'a', 'failed', 'download', ['storing'], 'req-1'), true);
});

test('admitBatch counts a batch once; rejected rows are only counted (their reasons are in S3), with no done bit', async () => {
  assert.equal(await rows.admitBatch(run, 10, 5, 1), true);
  assert.equal(await rows.admitBatch(run, 10, 5, 1), false, 'a replayed batch');
  const r = (await rows.getRun(run))!;
  assert.deepEqual([r.cursor, r.queued, r.rejected], [10, 5, 1]);
  assert.equal(await redis.exists(`pb:run:${run}:rejected`), 0, 'no rejected-reasons hash');
  assert.equal(await redis.exists(`pb:run:${run}:done`), 0, 'no done bit for a rejected row');
});

test('the run is done only when the producer finished and every queued row is terminal and flushed', async () => {
  await rows.admitBatch(run, 3, 2, 0);
  await submitted('a', 2, 'req-a');
  await submitted('b', 3, 'req-b');
  assert.equal(await rows.finishProducing(run, 2), false);
  await rows.recordResult(run, 'a', { requestId: 'req-a', status: 'ERROR', error: 'x' });
  assert.equal(await rows.forgetRow(run, 'a'), false);
  await rows.recordResult(run, 'b', { requestId: 'req-b', status: 'OK' });
  await rows.completeRow(run, 'b', 'req-b', [], '', '');
  assert.equal(await rows.forgetRow(run, 'b'), true);
});

test('failure threshold: past min rows and ratio the run stops, and unsubmitted rows are canceled', async () => {
  for (const [i, key] of ['a', 'b', 'c', 'd'].entries()) {
    await submitted(key, i + 2, `req-${key}`);
    await rows.recordResult(run, key, { requestId: `req-${key}`, status: key === 'a' ? 'OK' : 'ERROR', error: 'model error' });
    if (key === 'a') await rows.completeRow(run, key, 'req-a', [], '', '');
  }
  const r = (await rows.getRun(run))!;
  assert.equal(r.state, 'stopped');
  assert.match(r.stopReason!, /3 of 4 finished rows failed/);
  assert.equal((await rows.claimSubmit(run, 'e', 6, data)).outcome, 'canceled');
  assert.match((await rows.getRow(run, 'e'))!.error!, /run stopped before this row was submitted: failure threshold exceeded/);
  assert.equal((await rows.getRun(run))!.canceled, 1);
});

test('failure threshold: exactly at the ratio the run goes on; above it the run stops', async () => {
  // minRows 4, ratio 0.5: 2 failed of 4 finished is at the ratio, not above it.
  for (const [i, key] of ['a', 'b', 'c', 'd', 'e'].entries()) {
    await submitted(key, i + 2, `req-${key}`);
    const ok = key === 'a' || key === 'b';
    await rows.recordResult(run, key, { requestId: `req-${key}`, status: ok ? 'OK' : 'ERROR', error: 'model error' });
    if (ok) await rows.completeRow(run, key, `req-${key}`, [], '', '');
    if (key === 'd') assert.equal((await rows.getRun(run))!.state, 'running', '2 of 4 failed: exactly the ratio');
  }
  const r = (await rows.getRun(run))!;
  assert.equal(r.state, 'stopped', '3 of 5 failed: above the ratio');
  assert.match(r.stopReason!, /3 of 5 finished rows failed/);
});

test('past the deadline a submitted row fails; the deadline never touches a row being stored', async () => {
  await submitted('a', 2, 'req-a');
  assert.equal(await rows.finishRow(run, 'a', 'failed', 'timed out', ['pending', 'submitting', 'submitted']), true);
  assert.equal((await rows.getRow(run, 'a'))!.error, 'timed out');
});

test('createRun records the run and its policy in one step, and refuses an id that is taken', async () => {
  const r = (await rows.getRun(run))!;
  assert.deepEqual(r.policy, policy);
  assert.deepEqual([r.state, r.queued, r.costMicros], ['running', 0, 0]);
  assert.equal(await rows.createRun({ runId: run, manifest: 'other.csv', manifestKey: 'k2', options: {}, policy: { ...policy, maxAttempts: 9 } }), false);
  assert.equal((await rows.getRun(run))!.policy.maxAttempts, 3, 'the first policy stays');
});

test('the index of runs keeps the newest ones only: runs started one after another never grow it past its bound', async () => {
  const ids = ['idx-a', 'idx-b', 'idx-c', 'idx-d'];
  for (const id of ids) assert.equal(await rows.createRun({ runId: id, manifest: 'm.csv', manifestKey: 'k', options: {}, policy }, 2), true);
  assert.deepEqual(await rows.runIds(), ['idx-d', 'idx-c'], 'the two newest, newest first');
  assert.ok((await rows.getRun('idx-a'))?.runId, 'a run dropped from the index is itself untouched');
});

test('cancelRun stops submitting; finishRun ends the run once; a finished run cannot be canceled', async () => {
  await submitted('a', 2, 'req-a');
  assert.equal(await rows.cancelRun(run, 'canceled by request'), 'canceled');
  assert.equal(await rows.cancelRun(run, 'again'), 'already');
  assert.equal((await rows.claimSubmit(run, 'b', 3, data)).outcome, 'canceled');
  assert.match((await rows.getRow(run, 'b'))!.error!, /run canceled before this row was submitted: canceled by request/);
  assert.equal(await rows.finishRun(run, 'canceled'), 'open', 'never under rows in flight (a finalize replayed on a Redis that lost its last writes)');
  await rows.admitBatch(run, 3, 2, 0);
  await rows.finishRow(run, 'a', 'canceled', 'run canceled', ['submitted']);
  for (const k of ['a', 'b']) await rows.forgetRow(run, k);
  await rows.finishProducing(run, 2);
  assert.equal(await rows.finishRun(run, 'canceled'), 'finished');
  assert.equal(await rows.finishRun(run, 'finished'), 'already');
  assert.equal((await rows.getRun(run))!.state, 'canceled');
  assert.equal(await rows.cancelRun(run, 'late'), 'finished');
  assert.equal(await rows.cancelRun('no-such-run', 'x'), 'norun');
});

test('the cost cap: claims count estimated cost; the claim that would pass the cap stops the run instead', async () => {
  run = `run${++n}`;
  await rows.createRun({ runId: run, manifest: 'm.csv', manifestKey: 'k', options: {}, policy: { ...policy, maxCost: 2.5 } });
  for (const [i, key] of ['a', 'b'].entries()) assert.equal((await rows.claimSubmit(run, key, i + 2, data, 1_000_000)).outcome, 'submit');
  assert.equal(await rows.releaseSubmit(run, 'b', 1, 'fal answered 503'), true);
  assert.equal((await rows.getRun(run))!.costMicros, 1_000_000, 'a refused submission costs nothing');
  assert.equal((await rows.claimSubmit(run, 'b', 3, data, 1_000_000)).outcome, 'submit');
  assert.equal((await rows.claimSubmit(run, 'c', 4, data, 1_000_000)).outcome, 'canceled');
  const r = (await rows.getRun(run))!;
  assert.equal(r.state, 'stopped');
  assert.match(r.stopReason!, /^cost cap reached: 2\.00 USD submitted, the next row would pass the cap of 2\.50 USD/);
});

test('ending a row expires the mappings of all its requests, which the caller passes as keys', async () => {
  await submitted('a', 2, 'req-1');
  await rows.supersede(run, 'a', 'submitted', 1, 'req-1', 'lost');
  await rows.claimSubmit(run, 'a', 2, data);
  await rows.recordSubmit(run, 'a', 2, 'req-2', Date.now());
  assert.deepEqual([await redis.ttl('pb:req:req-1'), await redis.ttl('pb:req:req-2')], [-1, -1]);
  assert.equal(await rows.finishRow(run, 'a', 'failed', 'x', ['submitted']), true);
  for (const id of ['req-1', 'req-2']) assert.ok((await redis.ttl(`pb:req:${id}`)) > 0, `${id} expires`);
});

test('the read side: a run and its rows read back as the transitions wrote them', async () => {
  assert.equal(await rows.createRun({ runId: run, manifest: 'other.csv', manifestKey: 'x', options: {}, policy }), false, 'it exists: nothing changes');
  let r = (await rows.getRun(run))!;
  assert.deepEqual(
    [r.runId, r.state, r.manifest, r.manifestKey, r.cursor, r.producerDone, r.total, r.finishedAt, r.queued],
    [run, 'running', 'm.csv', 'k', 0, false, undefined, undefined, 0],
  );
  assert.equal(await rows.getRun('no-such-run'), undefined);
  assert.ok((await rows.activeRunIds()).includes(run));

  await rows.admitBatch(run, 5, 3, 0);
  assert.equal(await rows.getRow(run, 'a'), undefined, 'no row before its claim');
  await submitted('a', 2, 'req-1');
  await rows.supersede(run, 'a', 'submitted', 1, 'req-1', 'lost');
  await rows.claimSubmit(run, 'a', 2, data);
  await rows.recordSubmit(run, 'a', 2, 'req-2', Date.now());
  await rows.markPolled(run, 'a', 'req-2', 12_345, 'IN_QUEUE');
  const row = (await rows.getRow(run, 'a'))!;
  assert.deepEqual(
    [row.state, row.line, row.attempt, row.requestId, row.requestIds, row.polls, row.nextPollAt, row.finishedAt, row.lastError],
    ['submitted', 2, 2, 'req-2', ['req-1', 'req-2'], 1, 12_345, undefined, 'lost'],
  );
  assert.equal(typeof row.claimedAt, 'number');
  assert.deepEqual(row.data, data);
  assert.deepEqual(await rows.activeRowKeys(run), ['a']);
  assert.deepEqual(await rows.lookupRequest('req-1'), { runId: run, key: 'a', attempt: 1 });
  assert.deepEqual(await rows.lookupRequest('req-2'), { runId: run, key: 'a', attempt: 2 });
  assert.equal(await rows.lookupRequest('req-unknown'), undefined);
  assert.equal(await rows.inFlight(run), 3);
  assert.equal(await rows.isDone(run, 2), false);

  await rows.recordResult(run, 'a', { requestId: 'req-2', status: 'ERROR', error: 'model error' });
  assert.equal(await rows.isDone(run, 2), true);
  assert.equal(await rows.inFlight(run), 2, 'a failed row leaves the window');
  await submitted('b', 3, 'req-b');
  await rows.recordResult(run, 'b', { requestId: 'req-b', status: 'OK' });
  await rows.completeRow(run, 'b', 'req-b', [], '', '');
  await submitted('c', 4, 'req-c');
  await rows.finishRow(run, 'c', 'canceled', 'run canceled', ['submitted']);
  assert.equal(await rows.inFlight(run), 0, 'completed and canceled rows leave it too');
  assert.equal(typeof (await rows.getRow(run, 'a'))!.finishedAt, 'number');
  assert.equal(await rows.finishProducing(run, 4), false);
  r = (await rows.getRun(run))!;
  assert.deepEqual([r.producerDone, r.total, r.cursor], [true, 4, 5]);
  assert.equal(await rows.finishRun(run, 'finished'), 'open', 'ended rows not yet flushed are still in flight');
  for (const k of ['a', 'b', 'c']) await rows.forgetRow(run, k);
  assert.equal(await rows.finishRun(run, 'finished'), 'finished');
  assert.equal(await rows.finishRun(run, 'finished'), 'already', 'once');
  r = (await rows.getRun(run))!;
  assert.equal(typeof r.finishedAt, 'number');
  assert.ok(!(await rows.activeRunIds()).includes(run));
});

test('run ids list newest first, up to a limit; extra run fields are written and read back', async () => {
  const ids = [1, 2, 3].map((i) => `zrun-${n}-${i}`) as [string, string, string];
  for (const id of ids) await rows.createRun({ runId: id, manifest: 'm.csv', manifestKey: 'k', options: {}, policy });
  assert.deepEqual(await rows.runIds(2), [ids[2], ids[1]]);
  assert.deepEqual((await rows.runIds()).slice(0, 3), [ids[2], ids[1], ids[0]]);

  await rows.annotateRun(run, { retriedBy: `${ids[0]},${ids[1]}`, estimateMicros: 42 });
  assert.equal(await rows.runField(run, 'estimateMicros'), '42');
  assert.equal(await rows.runField(run, 'no-such-field'), undefined);
  assert.deepEqual((await rows.getRun(run))!.retriedBy, [ids[0], ids[1]]);
  assert.deepEqual((await rows.getRun(ids[0]))!.retriedBy, [], 'a run nobody retried');
});

test('a retry run is made of the lines it selected, and only those', async () => {
  assert.equal(await rows.selectedLines(run), undefined, 'a run of the whole manifest has no selection');
  const chosen = [2, 9, 17];
  await rows.selectLines(run, chosen);
  const bitmap = (await rows.selectedLines(run))!;
  for (let line = 0; line < 40; line++) assert.equal(lineSelected(bitmap, line), chosen.includes(line), `line ${line}`);
  assert.equal(lineSelected(bitmap, 1_000_000), false, 'a line past the end of the selection');
});

test('the row deadline counts from the first poll that saw the current request running', async () => {
  await submitted('a', 2, 'req-1');
  await rows.markPolled(run, 'a', 'req-1', 0, 'IN_QUEUE', 1_000);
  assert.equal((await rows.getRow(run, 'a'))!.startedAt, undefined, 'queued at fal: not started');
  await rows.markPolled(run, 'a', 'req-1', 0, 'IN_PROGRESS', 2_000);
  await rows.markPolled(run, 'a', 'req-1', 0, 'IN_PROGRESS', 3_000);
  let row = (await rows.getRow(run, 'a'))!;
  assert.deepEqual([row.startedAt, row.falStatus, row.polls], [2_000, 'IN_PROGRESS', 3]);
  // A new request for the row: the old request's start says nothing about it.
  await rows.supersede(run, 'a', 'submitted', 1, 'req-1', 'lost');
  await rows.claimSubmit(run, 'a', 2, data);
  await rows.recordSubmit(run, 'a', 2, 'req-2', Date.now());
  assert.equal((await rows.getRow(run, 'a'))!.startedAt, undefined);
  await rows.markPolled(run, 'a', 'req-2', 0, 'IN_PROGRESS', 5_000);
  row = (await rows.getRow(run, 'a'))!;
  assert.deepEqual([row.requestId, row.startedAt], ['req-2', 5_000]);
});

test('ending a row re-reads it when a request is recorded meanwhile, and gives up if it never settles', async () => {
  // Another worker records a new request for the row between each read of the row and the call.
  const racing = new Redis(server.url);
  const writer = new Redis(server.url);
  let races = 0;
  let reads = 0;
  const hgetall = racing.hgetall.bind(racing);
  Object.assign(racing, {
    hgetall: async (key: string) => {
      const h = await hgetall(key);
      reads++;
      if (races > 0) {
        races--;
        const attempt = await writer.hincrby(key, 'attempt', 1);
        await writer.hset(key, `req${attempt}`, `req-race-${attempt}`, 'requestId', `req-race-${attempt}`);
      }
      return h;
    },
  });
  try {
    const store = new RowStore(racing);
    await submitted('a', 2, 'req-1');
    races = 2;
    assert.equal(await store.finishRow(run, 'a', 'failed', 'timed out', ['submitted']), true);
    assert.equal(reads, 3, 'read again after each change');
    assert.deepEqual([(await rows.getRow(run, 'a'))!.state, (await rows.getRow(run, 'a'))!.attempt], ['failed', 3]);

    await submitted('b', 3, 'req-b');
    races = Infinity;
    reads = 0;
    await assert.rejects(store.finishRow(run, 'b', 'failed', 'timed out', ['submitted']), /row run\d+\/b kept changing while it was being ended/);
    assert.equal(reads, 6, 'tried 1 + 5 times');
    assert.equal((await rows.getRow(run, 'b'))!.state, 'submitted', 'nothing ended on a stale read');
  } finally {
    racing.disconnect();
    writer.disconnect();
  }
});

test('the storer gets the row from the transitions themselves: stored, then completed, whatever its guess of the requests', async () => {
  await submitted('a', 2, 'req-1');
  const stored = await rows.recordResultRow(run, 'a', { requestId: 'req-1', status: 'OK' });
  assert.equal(stored.decision, 'store');
  assert.deepEqual([stored.row?.state, stored.row?.storeRequestId, stored.row?.requestIds, stored.row?.line, stored.row?.data], ['storing', 'req-1', ['req-1'], 2, data]);
  assert.deepEqual((await rows.recordResultRow(run, 'a', { requestId: 'req-1', status: 'OK' })).row?.state, 'storing', 'a crashed store re-enters with the row');
  const images = [{ key: 'k/a_0.png', sourceUrl: 'https://x.example/y.png', contentType: 'image/png', bytes: 3, sha256: 'abc' }];
  // A wrong guess of the row's requests (none) costs a re-read, never a wrong outcome.
  const done = await rows.completeRowRead(run, 'a', 'req-1', images, '7', 'p', []);
  assert.deepEqual([done?.state, done?.images, done?.seed, done?.prompt, typeof done?.finishedAt], ['completed', images, '7', 'p', 'number']);
  assert.ok((await redis.ttl('pb:req:req-1')) > 0, 'the re-read found the request: its mapping expires with the row');
  assert.equal(await rows.completeRowRead(run, 'a', 'req-1', images, '7', 'p', ['req-1']), undefined, 'only the call that completed it gets the row');
  assert.deepEqual(await rows.recordResultRow(run, 'a', { requestId: 'req-1', status: 'OK' }), { decision: 'duplicate' });
  assert.equal((await rows.getRun(run))!.completed, 1);
});

test('the smaller answers: a created run, a claim in flight, fal\'s error without text, a claim not yet submitted', async () => {
  assert.equal(await rows.createRun({ runId: `fresh-${n}`, manifest: 'm.csv', manifestKey: 'k', options: {}, policy }), true);
  await rows.claimSubmit(run, 'a', 2, data);
  assert.deepEqual(await rows.claimSubmit(run, 'a', 2, data), { outcome: 'inflight', detail: '1' }, 'which attempt is in flight');
  // A webhook placed by its URL hint before the submit answer: its mapping names the attempt.
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-h', hintAttempt: 1, status: 'ERROR' }), 'failed');
  assert.deepEqual(await rows.lookupRequest('req-h'), { runId: run, key: 'a', attempt: 1 });
  assert.equal((await rows.getRow(run, 'a'))!.error, 'fal reported an error', 'an ERROR without text still says what happened');

  await submitted('b', 3, 'req-b1');
  await rows.supersede(run, 'b', 'submitted', 1, 'req-b1', 'lost');
  await rows.claimSubmit(run, 'b', 3, data);
  assert.deepEqual((await rows.getRow(run, 'b'))!.requestIds, ['req-b1'], 'attempt 2 is claimed, not yet submitted: no request id for it');
});

test('canceled rows that were never enqueued keep their reason; a run whose rows all ended is done when producing ends', async () => {
  assert.equal(await rows.admitBatch(run, 8, 1, 1, [{ line: 6, ordinal: 3, reason: 'run canceled before this row was queued' }]), true);
  assert.deepEqual(await rows.canceledReasons(run, [6, 7]), ['run canceled before this row was queued', null]);
  assert.deepEqual(await rows.canceledReasons(run, []), []);
  assert.deepEqual([await rows.isDone(run, 3), await rows.isDone(run, 6)], [true, false], 'the done bit is the ordinal, not the line');
  await submitted('a', 2, 'req-a');
  await rows.recordResult(run, 'a', { requestId: 'req-a', status: 'ERROR', error: 'x' });
  assert.equal(await rows.forgetRow(run, 'a'), false, 'the producer has not finished');
  assert.equal(await rows.finishProducing(run, 3), true, 'every queued row is terminal and flushed');
});

test('a row with ten or more requests still ends (every request\'s mapping passed)', async () => {
  run = `run${++n}`;
  await rows.createRun({ runId: run, manifest: 'm.csv', manifestKey: 'k', options: {}, policy: { ...policy, maxAttempts: 12 } });
  for (let attempt = 1; attempt <= 10; attempt++) {
    await rows.claimSubmit(run, 'a', 2, data);
    await rows.recordSubmit(run, 'a', attempt, `req-${attempt}`, Date.now());
    if (attempt < 10) assert.equal(await rows.supersede(run, 'a', 'submitted', attempt, `req-${attempt}`, 'lost'), 'resubmit');
  }
  assert.equal(await rows.finishRow(run, 'a', 'failed', 'timed out', ['submitted']), true);
  assert.ok((await redis.ttl('pb:req:req-10')) > 0, 'the tenth request\'s mapping expires with the row');
});

test('a Redis whose script answers something this code does not know fails loudly, naming the command and the answer', async () => {
  // Another version of the service defined pb_cancelRun on this connection first (ioredis keeps it).
  const other = new Redis(server.url);
  try {
    other.defineCommand('pb_cancelRun', { lua: "return 'paused'" });
    const store = new RowStore(other);
    await assert.rejects(store.cancelRun(run, 'x'), (err: unknown) => {
      assert.ok(err instanceof UnexpectedReplyError);
      assert.equal(err.name, 'UnexpectedReplyError');
      assert.match(err.message, /^Redis command cancelRun answered "paused", not one of canceled, already, finished, norun$/);
      return true;
    });
    assert.equal((await rows.getRun(run))!.state, 'running');
  } finally {
    other.disconnect();
  }
});

test('an ERROR fal did not bill becomes a new attempt (its cost given back) until MAX_ATTEMPTS; each attempt error is kept', async () => {
  const retry = { type: 'runner_server_error', category: 'fal_transient' as const, retry: true, refund: true };
  for (let attempt = 1; attempt <= 3; attempt++) {
    assert.deepEqual(await rows.claimSubmit(run, 'a', 1, data, 1_000_000), { outcome: 'submit', attempt, endpoint: 'fal-ai/x' });
    assert.equal(await rows.recordSubmit(run, 'a', attempt, `req-${attempt}`, Date.now()), 'ok');
    const decision = await rows.recordResult(run, 'a', { requestId: `req-${attempt}`, status: 'ERROR', error: `crash ${attempt}`, verdict: retry });
    assert.equal(decision, attempt < 3 ? 'retry' : 'failed');
    assert.equal(await rows.recordResult(run, 'a', { requestId: `req-${attempt}`, status: 'ERROR', error: 'again', verdict: retry }), attempt < 3 ? 'ignored' : 'duplicate', 'a repeat is no new decision');
  }
  const row = (await rows.getRow(run, 'a'))!;
  assert.deepEqual([row.state, row.errorType, row.errorCategory], ['failed', 'runner_server_error', 'fal_transient']);
  assert.equal(row.error, 'gave up after 3 fal requests: crash 3');
  assert.deepEqual(row.attemptErrors.map((e) => [e.attempt, e.request_id, e.error]), [[1, 'req-1', 'crash 1'], [2, 'req-2', 'crash 2'], [3, 'req-3', 'crash 3']]);
  const r = (await rows.getRun(run))!;
  assert.deepEqual([r.submits, r.costMicros, r.submittedCostMicros, r.failedByCategory], [3, 0, 3_000_000, { fal_transient: 1 }], 'submitted three times, billed none');
});

test('an ERROR that fails at once keeps its estimate when fal may bill it, and counts under its category', async () => {
  await rows.claimSubmit(run, 'a', 1, data, 1_000_000);
  await rows.recordSubmit(run, 'a', 1, 'req-1', Date.now());
  const verdict = { type: 'content_policy_violation', category: 'content_policy' as const, retry: false, refund: false };
  assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-1', status: 'ERROR', error: 'flagged', verdict }), 'failed');
  const r = (await rows.getRun(run))!;
  assert.deepEqual([r.costMicros, r.submittedCostMicros, r.failedByCategory], [1_000_000, 1_000_000, { content_policy: 1 }]);
  assert.deepEqual([(await rows.getRow(run, 'a'))!.errorType, (await rows.getRow(run, 'a'))!.error], ['content_policy_violation', 'flagged']);
});

test("an unbilled ERROR of a superseded attempt still gives its estimate back, once", async () => {
  await rows.claimSubmit(run, 'a', 1, data, 1_000_000);
  await rows.recordSubmit(run, 'a', 1, 'req-1', Date.now());
  assert.equal(await rows.supersede(run, 'a', 'submitted', 1, 'req-1', 'no answer'), 'resubmit');
  await rows.claimSubmit(run, 'a', 1, data, 1_000_000);
  await rows.recordSubmit(run, 'a', 2, 'req-2', Date.now());
  const verdict = { type: 'runner_server_error', category: 'fal_transient' as const, retry: true, refund: true };
  for (let i = 0; i < 2; i++) assert.equal(await rows.recordResult(run, 'a', { requestId: 'req-1', status: 'ERROR', error: 'crash', verdict }), 'ignored');
  const r = (await rows.getRun(run))!;
  assert.deepEqual([r.costMicros, r.submittedCostMicros], [1_000_000, 2_000_000], 'the old attempt is not billed, the current one stands');
});
