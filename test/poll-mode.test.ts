// Results without webhooks (RESULT_DELIVERY): which mode a configuration gets and why, and poll mode
// end to end against the strict emulator: no webhook URL is sent, each request is polled by its own
// job on a schedule learned from the run (not by the reconciler's sweep), and an image costs at most
// four fal calls; a run after another of the same endpoint times its first looks by what that one
// learned, so a service that has run before looks at each request once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../src/core/config.ts';
import { buildPolicy } from '../src/core/policy.ts';
import { falCalls } from '../src/emulator/index.ts';
import { produceRun } from '../src/producer/produce.ts';
import { waitForRun } from '../src/producer/wait.ts';
import { runStatus } from '../src/status.ts';
import { firstPollDelay, nextPollDelay, observeRunTime } from '../src/worker/poll.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack } from './helpers/stack.ts';

const REAL_FAL = { FAL_QUEUE_URL: 'https://queue.fal.run' };
const P = buildPolicy(loadConfig({})).poll;

test('auto: webhooks only to an address fal can reach; polling otherwise, said once with the reason', () => {
  const unset = loadConfig(REAL_FAL).delivery;
  assert.equal(unset.mode, 'poll');
  assert.match(unset.why, /WEBHOOK_PUBLIC_URL is not set/);
  assert.equal(unset.warning, undefined, 'no URL at all is a choice, not a mistake');

  assert.equal(loadConfig({ ...REAL_FAL, WEBHOOK_PUBLIC_URL: 'https://hooks.example.com' }).delivery.mode, 'webhook');

  for (const url of ['http://127.0.0.1:8080', 'http://192.168.1.20:8080', 'http://[::1]:8080', 'http://localhost:8080', 'http://169.254.1.1', 'http://webhook:8080']) {
    const d = loadConfig({ ...REAL_FAL, WEBHOOK_PUBLIC_URL: url }).delivery;
    assert.equal(d.mode, 'poll', url);
    assert.match(d.warning ?? '', /cannot be reached by fal.*set WEBHOOK_PUBLIC_URL to a public https URL/, `${url}: a warning naming the fix`);
  }
  // The emulator on this machine (or a private network) reaches private webhook URLs: the embedded
  // stack and the tests keep webhooks.
  assert.equal(loadConfig({ FAL_QUEUE_URL: 'http://127.0.0.1:8090' }).delivery.mode, 'webhook');
  assert.equal(loadConfig({ FAL_QUEUE_URL: 'http://10.0.0.5:8090', WEBHOOK_PUBLIC_URL: 'http://10.0.0.6:8080' }).delivery.mode, 'webhook');

  const forced = loadConfig({ ...REAL_FAL, RESULT_DELIVERY: 'webhook' }).delivery;
  assert.equal(forced.mode, 'webhook');
  assert.match(forced.warning ?? '', /no webhook will arrive.*RESULT_DELIVERY=poll/);
  assert.deepEqual(loadConfig({ RESULT_DELIVERY: 'poll', FAL_QUEUE_URL: 'http://127.0.0.1:8090' }).delivery.mode, 'poll');
  assert.throws(() => loadConfig({ RESULT_DELIVERY: 'sometimes' }), /RESULT_DELIVERY/);
});

test('the poll schedule aims at the expected end: run time, queue position over the places, a margin', () => {
  const learned = { runMs: 10_000, samples: 5 };
  // Just submitted, next to run: once the run time has passed, plus a tenth of it.
  assert.equal(nextPollDelay(P, learned, { status: 'IN_QUEUE', queuePosition: 0, sinceSubmitMs: 0, polls: 0 }, 2), 11_000);
  // Four ahead on two places: two waves first.
  assert.equal(nextPollDelay(P, learned, { status: 'IN_QUEUE', queuePosition: 4, sinceSubmitMs: 0, polls: 0 }, 2), 31_000);
  // Running for 6 s: the rest of it.
  assert.equal(nextPollDelay(P, learned, { status: 'IN_PROGRESS', sinceSubmitMs: 6000, sinceStartMs: 6000, polls: 1 }, 2), 5000);
  // Run times that vary: past the expected end by twice their spread rather than a tenth (at most 1 s).
  assert.equal(nextPollDelay(P, { runMs: 2000, devMs: 300, samples: 5 }, { status: 'IN_QUEUE', queuePosition: 0, sinceSubmitMs: 0, polls: 0 }, 2), 2600);
  assert.equal(nextPollDelay(P, { runMs: 2000, devMs: 30, samples: 5 }, { status: 'IN_QUEUE', queuePosition: 0, sinceSubmitMs: 0, polls: 0 }, 2), 2200);
  // Overdue: soon, never more than 2 s later.
  assert.equal(nextPollDelay(P, learned, { status: 'IN_PROGRESS', sinceSubmitMs: 12_000, sinceStartMs: 12_000, polls: 2 }, 2), 2000);
  // Nothing learned yet: 1 s, then doubling the time since submit.
  const cold = { samples: 0 };
  assert.equal(nextPollDelay(P, cold, { status: 'IN_PROGRESS', sinceSubmitMs: 0, polls: 0 }, 2), 1000);
  assert.equal(nextPollDelay(P, cold, { status: 'IN_PROGRESS', sinceSubmitMs: 4000, polls: 2 }, 2), 4000);
});

test('poll mode: no webhook URL is sent, every row completes by its poll jobs, at most 4 fal calls per image', async () => {
  // A 2 s generation on fal's 2 places; the reconciler's sweep and grace far beyond the test, so the
  // poll jobs alone must bring every result in.
  const t = await startTestStack({
    env: { RESULT_DELIVERY: 'poll', FAL_CONCURRENCY: '2', RECONCILE_INTERVAL_MS: '600000', RECONCILE_GRACE_MS: '600000' },
    emulator: { slots: 2, latencyMs: { min: 2000, max: 2000 } },
  });
  try {
    const rows = 8;
    const face = await faceDataUri(3);
    const lines = ['id,face_url', ...Array.from({ length: rows }, (_, i) => `p${i},"${face}"`)];
    const { runId } = await produceRun(t.ctx, await t.manifest('poll.csv', `${lines.join('\n')}\n`));
    // While it runs, status tells fal's running requests from the rows waiting for a place.
    let seen = false;
    for (let i = 0; i < 100 && !seen; i++) {
      const s = (await runStatus(t.ctx, runId))!;
      seen = s.runningAtFal === 2 && s.waitingForFal > 0;
      if (!seen) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(seen, 'status showed 2 requests running at fal and rows waiting for a place');
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 30_000 });
    assert.deepEqual([run.completed, run.failed], [rows, 0]);
    const stats = t.local.emulator!.stats();
    assert.equal(stats.webhooksSent + stats.webhooksDropped, 0, 'fal was given no webhook URL');
    assert.equal(stats.accepted, rows);
    assert.ok(falCalls(stats) <= 4 * rows, `${falCalls(stats)} fal calls for ${rows} images (submit ${stats.submits}, status ${stats.statusCalls}, result ${stats.resultCalls})`);
    assert.equal(stats.maxQueued, 0, 'never more requests at fal than its places');
  } finally {
    await t.stop();
  }
});

test("a run that has learned nothing times its first looks by the endpoint's run time from earlier runs, bounded and expiring", async () => {
  const t = await startTestStack({ webhook: false, workers: false, env: { RESULT_DELIVERY: 'poll', FAL_CONCURRENCY: '2' } });
  try {
    const { ctx } = t;
    // The first run ever: nothing known, the cold first look.
    assert.equal(await firstPollDelay(ctx, 'r1', 'fal-ai/a', 0), P.coldFirstMs);
    // A webhook's arrival (queueing included) teaches its own run, never the endpoint.
    await observeRunTime(ctx, 'r1', 7000);
    assert.equal(await firstPollDelay(ctx, 'r2', 'fal-ai/a', 0), P.coldFirstMs);
    // fal's run time of an earlier run's request: the next run's first look is at its expected end.
    await observeRunTime(ctx, 'r1', 5000, 'fal-ai/a');
    assert.equal(await firstPollDelay(ctx, 'r2', 'fal-ai/a', 0), 5500);
    assert.equal(await firstPollDelay(ctx, 'r2', 'fal-ai/a', 4), 3 * 5000 + 500, 'queue position over the places, as with a learned run time');
    assert.equal(await firstPollDelay(ctx, 'r2', 'fal-ai/b', 0), P.coldFirstMs, 'another endpoint learns nothing from it');
    // Once the run learned its own, that one rules; the endpoint's moves toward each new sample.
    await observeRunTime(ctx, 'r2', 3000, 'fal-ai/a');
    assert.equal(await firstPollDelay(ctx, 'r2', 'fal-ai/a', 0), 3300);
    // The next run starts from every run so far; the 2 s between their samples widens its margin to the 1 s cap.
    assert.equal(await firstPollDelay(ctx, 'r3', 'fal-ai/a', 0), 5000 + P.ewmaWeight * (3000 - 5000) + 1000);
    // Bounded: never trusted beyond the longest gap between two looks; and it expires.
    await observeRunTime(ctx, 'r4', 10 * P.maxGapMs, 'fal-ai/slow');
    assert.equal(await firstPollDelay(ctx, 'r5', 'fal-ai/slow', 0), P.maxGapMs);
    const ttl = await ctx.redis.ttl('pb:fal:timing:fal-ai/a');
    assert.ok(ttl > 0 && ttl <= P.endpointTimingTtlSeconds, `the endpoint's estimate expires (ttl ${ttl} s)`);
  } finally {
    await t.stop();
  }
});

test('poll mode: a run after another of the same endpoint looks at each request once', async () => {
  const t = await startTestStack({
    env: { RESULT_DELIVERY: 'poll', FAL_CONCURRENCY: '2', RECONCILE_INTERVAL_MS: '600000', RECONCILE_GRACE_MS: '600000' },
    emulator: { slots: 2, latencyMs: { min: 2000, max: 2000 } },
  });
  try {
    const face = await faceDataUri(5);
    const run = async (name: string, rows: number) => {
      const before = t.local.emulator!.stats().statusCalls;
      const lines = ['id,face_url', ...Array.from({ length: rows }, (_, i) => `${name}${i},"${face}"`)];
      const { runId } = await produceRun(t.ctx, await t.manifest(`${name}.csv`, `${lines.join('\n')}\n`));
      const r = await waitForRun(t.ctx, runId, { timeoutMs: 30_000 });
      assert.deepEqual([r.completed, r.failed], [rows, 0]);
      return t.local.emulator!.stats().statusCalls - before;
    };
    // The first run ever knows no run time: its first wave is looked at early, then again.
    const cold = await run('cold', 2);
    assert.ok(cold > 2, `the first run pays early looks (${cold} status calls for 2 requests)`);
    // The next run starts from what the first learned: one status call a request, first wave included.
    // Without the endpoint's estimate its first wave alone would be looked at early (6 calls); one
    // more than 4 is allowed for a completion the loaded emulator's timer made late.
    const warm = await run('warm', 4);
    assert.ok(warm >= 4 && warm <= 5, `${warm} status calls for 4 requests`);
  } finally {
    await t.stop();
  }
});

test('poll mode: when poll jobs are lost, the sweep takes over and every row still completes; a place left behind is returned', async () => {
  const t = await startTestStack({
    env: { RESULT_DELIVERY: 'poll', FAL_CONCURRENCY: '2' },
    emulator: { slots: 2, latencyMs: { min: 300, max: 300 } },
    // The sweep steps in 1 s after a poll job was due (instead of two job locks).
    policy: { poll: { safetyMs: 1000 } },
  });
  try {
    // A place held by a row that no longer exists (its worker died between taking it and claiming).
    await t.ctx.redis.zadd('pb:fal:slots', 0, 'gone-run\nghost');
    const face = await faceDataUri(4);
    const lines = ['id,face_url', ...Array.from({ length: 4 }, (_, i) => `q${i},"${face}"`)];
    const { runId } = await produceRun(t.ctx, await t.manifest('lost-polls.csv', `${lines.join('\n')}\n`));
    // Every poll job is dropped as soon as it is scheduled, until each row has been submitted once.
    for (let i = 0; i < 300 && t.local.emulator!.stats().accepted < 4; i++) {
      await t.ctx.queues.poll.drain(true);
      await new Promise((r) => setTimeout(r, 20));
    }
    await t.ctx.queues.poll.drain(true);
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed], [4, 0]);
    assert.equal(t.local.emulator!.stats().accepted, 4, 'nothing submitted twice');
    assert.equal(await t.ctx.redis.zscore('pb:fal:slots', 'gone-run\nghost'), null);
  } finally {
    await t.stop();
  }
});
