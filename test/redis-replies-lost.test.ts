// A command Redis ran whose reply was lost with the connection (Redis killed after its fsync, before
// it answered; a connection reset) is sent again by ioredis on its next connection. The row transitions
// a submission goes through answer that second delivery as they answered the first: the claim is the
// same claim (counted once, and its caller submits it), the record of fal's answer is the same record.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { Redis } from 'ioredis';
import { redisConnection } from '../src/core/context.ts';
import { keys } from '../src/core/keys.ts';
import { RowStore, type RowData } from '../src/core/rowState.ts';
import type { RunPolicy } from '../src/core/runPolicy.ts';
import { startRedisServer, type RunningRedis } from '../src/local/redisServer.ts';
import { waitForRun } from '../src/producer/wait.ts';
import { writeFaces } from './helpers/faces.ts';
import { startReplyCut, type ReplyCut } from './helpers/replyCut.ts';
import { startTestStack } from './helpers/stack.ts';

let server: RunningRedis;
let proxy: ReplyCut;
let redis: Redis;
let rows: RowStore;
let dir: string;
const data: RowData = { faceUrl: 'https://x.example/f.png', faceKind: 'http', input: {}, extra: {} };
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

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pb-replies-'));
  server = await startRedisServer({ dir, persistent: false });
  proxy = await startReplyCut(server.url);
  // The product's connection settings: commands wait through a reconnect and are sent again.
  redis = redisConnection(proxy.url);
  rows = new RowStore(redis);
  await rows.createRun({ runId: 'r', manifest: 'm.csv', manifestKey: 'k', options: {}, policy });
  // Every script loaded once, so the command cut below is the script itself, not its NOSCRIPT answer.
  await rows.claimSubmit('r', 'warm', 1, data);
  await rows.recordSubmit('r', 'warm', 1, 'req-warm', Date.now());
});
after(async () => {
  redis.disconnect();
  await proxy.close();
  await server.stop();
  await rm(dir, { recursive: true, force: true });
});

test('a claim whose reply was lost is sent again and answers the same claim: counted once, submitted by its caller', async () => {
  const cut = proxy.cutReplyOf(keys.adopt('r', 'a'));
  const claim = await rows.claimSubmit('r', 'a', 2, data, 1000);
  await cut;
  assert.deepEqual(claim, { outcome: 'submit', attempt: 1, endpoint: 'fal-ai/x' }, 'the caller goes on to submit attempt 1, not "in flight"');
  const run = (await rows.getRun('r'))!;
  assert.equal(run.submits, 2, 'the warm-up row and this one, each once');
  assert.equal((await rows.getRow('r', 'a'))!.attempt, 1);
  // Another claim of the row (another job) still finds it in flight.
  assert.equal((await rows.claimSubmit('r', 'a', 2, data, 1000)).outcome, 'inflight');
});

test("the record of fal's answer whose reply was lost is sent again and answers ok (the caller keeps its place on fal)", async () => {
  assert.equal((await rows.claimSubmit('r', 'b', 3, data)).outcome, 'submit');
  const cut = proxy.cutReplyOf(keys.request('req-b'));
  const recorded = await rows.recordSubmit('r', 'b', 1, 'req-b', Date.now());
  await cut;
  assert.equal(recorded, 'ok');
  const row = (await rows.getRow('r', 'b'))!;
  assert.deepEqual([row.state, row.requestId, row.attempt], ['submitted', 'req-b', 1]);
});

test("on the stack: a row whose claim's reply was lost is submitted by that claim, once: the run counts one submission for fal's one", { timeout: 120_000 }, async () => {
  // The redis-kill flake (#15): Redis killed after it ran a claim, before the reply. The claim sent
  // again answered "in flight", nobody submitted it, and the reconciler made it a second attempt.
  const own = await mkdtemp(join(tmpdir(), 'pb-replies-stack-'));
  const redisServer = await startRedisServer({ dir: own });
  const cut = await startReplyCut(redisServer.url);
  const t = await startTestStack({ env: { REDIS_URL: cut.url } });
  try {
    const [face] = await writeFaces(t.dir, 1);
    const lost = cut.cutReplyOf(keys.adopt('lost', 'r0'));
    await t.pb.startRun(await t.manifest('rows.csv', `id,face_url\nr0,${face}\n`), { runId: 'lost' });
    await lost;
    const run = await waitForRun(t.ctx, 'lost', { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed], [1, 0]);
    const stats = t.local.emulator!.stats();
    assert.equal(stats.accepted, 1);
    assert.equal(run.submits, 1, `the run counts ${run.submits} submissions for fal's ${stats.accepted}`);
  } finally {
    await t.stop();
    await cut.close();
    await redisServer.stop();
    await rm(own, { recursive: true, force: true });
  }
});
