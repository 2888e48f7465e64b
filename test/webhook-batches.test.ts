// Group commit of result jobs (resultBatch.ts), against the real results queue in a real Redis: a
// caller's promise settles only once its whole batch is in Redis; a webhook that arrives while the
// most batches are on their way waits and is sent once one lands (never left behind); a failed round
// trip rejects exactly the callers of that batch; batches are bounded in size. The round trips are
// held by the test (a gate in front of the queue's addBulk), so "in flight" is a fact, not a timing.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { jobIds, resultJobOptions, type ResultJob } from '../src/core/queues.ts';
import { ResultBatcher, type BulkResultJob } from '../src/webhook/resultBatch.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';
import { until } from './security/helpers.ts';

let t: TestStack;
before(async () => {
  t = await startTestStack({ webhook: false, workers: false });
});
after(() => t.stop());

function job(): BulkResultJob {
  const requestId = randomUUID();
  const data: ResultJob = { requestId, status: 'OK', payload: { images: [] }, error: null, source: 'webhook', receivedAt: Date.now() };
  return { name: 'result', data, opts: resultJobOptions(t.ctx.policy, requestId, 'OK') };
}

/** The queue's addBulk behind a gate: each call waits until the test lets it through (or fails it). */
function gatedQueue() {
  const calls: { jobs: BulkResultJob[]; pass: () => Promise<void>; fail: (err: Error) => void }[] = [];
  const addBulk = (jobs: BulkResultJob[]) =>
    new Promise<unknown>((resolve, reject) => {
      calls.push({
        jobs,
        pass: async () => resolve(await t.ctx.queues.results.addBulk(jobs)),
        fail: (err) => reject(err),
      });
    });
  return { calls, addBulk };
}

/** A promise's state, read after the callbacks already due have run. */
async function settled(p: Promise<unknown>): Promise<'pending' | 'resolved' | 'rejected'> {
  let state: 'pending' | 'resolved' | 'rejected' = 'pending';
  p.then(
    () => (state = 'resolved'),
    () => (state = 'rejected'),
  );
  await new Promise((r) => setImmediate(r));
  return state;
}

const inRedis = async (j: BulkResultJob) => Boolean(await t.ctx.queues.results.getJob(jobIds.result(j.data.requestId, 'OK')));
/** `p`, or a failure naming `what` when it has not settled within 5 s (a caller left without an answer). */
function answered<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within 5 s`)), 5000)));
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}
const quiet = (p: Promise<unknown>) => void p.catch(() => undefined);
// A batch that is never answered must fail its test, not hang the file.

test('a webhook that arrives while two batches are in flight is sent when one lands, and answered', { timeout: 30_000 }, async () => {
  const q = gatedQueue();
  const sizes: number[] = [];
  const batcher = new ResultBatcher(q.addBulk, { maxInFlight: 2, onBatch: (n) => sizes.push(n) });
  const [a, b, c, d] = [job(), job(), job(), job()];
  const pa = batcher.add(a);
  await until(() => q.calls.length === 1, 'the first batch sent');
  const pb = batcher.add(b);
  await until(() => q.calls.length === 2, 'the second batch sent');
  // Both places taken: these wait, together.
  const pc = batcher.add(c);
  const pd = batcher.add(d);
  assert.equal(await settled(pc), 'pending');
  assert.equal(q.calls.length, 2, 'no third round trip while two are in flight');
  assert.equal(await settled(pa), 'pending', 'no answer before its job is in Redis');
  assert.equal(await inRedis(a), false);

  await q.calls[0]!.pass();
  await pa;
  assert.ok(await inRedis(a));
  // The landed batch's place goes to the waiting ones, in one round trip.
  await until(() => q.calls.length === 3, 'the waiting webhooks sent once a batch landed');
  assert.deepEqual(q.calls[2]!.jobs.map((j) => j.data.requestId), [c, d].map((j) => j.data.requestId));
  await q.calls[2]!.pass();
  await Promise.all([pc, pd]);
  assert.equal(await settled(pb), 'pending', 'the second batch still waits for its own round trip');
  await q.calls[1]!.pass();
  await pb;
  for (const j of [a, b, c, d]) assert.ok(await inRedis(j));
  assert.deepEqual(sizes, [1, 2, 1]);
});

test('a failed round trip rejects every webhook of its batch and only those; later webhooks go on', { timeout: 30_000 }, async () => {
  const q = gatedQueue();
  const sizes: number[] = [];
  const batcher = new ResultBatcher(q.addBulk, { maxInFlight: 2, onBatch: (n) => sizes.push(n) });
  const first = [job(), job(), job()];
  const pFirst = first.map((j) => batcher.add(j));
  pFirst.forEach(quiet);
  await until(() => q.calls.length === 1, 'the first batch sent');
  assert.equal(q.calls[0]!.jobs.length, 3, 'added in the same turn: one batch');
  const other = job();
  const pOther = batcher.add(other);
  await until(() => q.calls.length === 2, 'the second batch sent');
  const late = job();
  const pLate = batcher.add(late);

  const err = new Error('OOM command not allowed');
  q.calls[0]!.fail(err);
  for (const [i, p] of pFirst.entries()) await assert.rejects(answered(p, `webhook ${i + 1} of the failed batch`), (e) => e === err);
  // Its place is free: the waiting webhook goes.
  await until(() => q.calls.length === 3, 'the waiting webhook sent after the failure');
  await q.calls[2]!.pass();
  await pLate;
  await q.calls[1]!.pass();
  await pOther;
  for (const j of first) assert.equal(await inRedis(j), false);
  assert.ok((await inRedis(other)) && (await inRedis(late)));
  assert.deepEqual(sizes, [1, 1], 'a failed batch is not counted');
  // fal re-delivers the failed ones: recorded.
  const again = first.map((j) => batcher.add(j));
  await until(() => q.calls.length === 4, 're-delivery sent');
  await q.calls[3]!.pass();
  await Promise.all(again);
  for (const j of first) assert.ok(await inRedis(j));
});

test('batches hold at most maxBatch jobs; with one in flight at most, webhooks wait their turn in order', { timeout: 30_000 }, async () => {
  const q = gatedQueue();
  const batcher = new ResultBatcher(q.addBulk, { maxBatch: 2, maxInFlight: 1 });
  const jobs = Array.from({ length: 5 }, job);
  const ps = jobs.map((j) => batcher.add(j));
  await until(() => q.calls.length === 1, 'the first batch sent');
  assert.equal(q.calls[0]!.jobs.length, 2);
  for (let i = 0; i < 3; i++) {
    assert.equal(q.calls.length, i + 1, 'one round trip at a time');
    await q.calls[i]!.pass();
    if (i < 2) await until(() => q.calls.length === i + 2, `batch ${i + 2} sent`);
  }
  assert.deepEqual(
    q.calls.map((c) => c.jobs.map((j) => j.data.requestId)),
    [jobs.slice(0, 2), jobs.slice(2, 4), jobs.slice(4)].map((b) => b.map((j) => j.data.requestId)),
  );
  await Promise.all(ps);
});

test('defaults: 128 jobs a batch, 2 in flight; the same job twice is one job in Redis', { timeout: 30_000 }, async () => {
  const q = gatedQueue();
  const batcher = new ResultBatcher(q.addBulk);
  const jobs = Array.from({ length: 300 }, job);
  const ps = jobs.map((j) => batcher.add(j));
  await until(() => q.calls.length === 2, 'two batches sent');
  assert.deepEqual(q.calls.map((c) => c.jobs.length), [128, 128]);
  await q.calls[0]!.pass();
  await until(() => q.calls.length === 3, 'the rest sent');
  assert.equal(q.calls[2]!.jobs.length, 44);
  await q.calls[1]!.pass();
  await q.calls[2]!.pass();
  await Promise.all(ps);
  const before = await t.ctx.queues.results.getJobCounts();
  const again = new ResultBatcher((js) => t.ctx.queues.results.addBulk(js));
  await Promise.all([again.add(jobs[0]!), again.add(jobs[0]!)]);
  assert.deepEqual(await t.ctx.queues.results.getJobCounts(), before, 'a re-delivered result adds no job');
});
