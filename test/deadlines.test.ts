// Two deadlines for a request at fal, each from its own start: QUEUE_DEADLINE_MS from its submission
// while fal has not been seen starting it (also sent to fal as the request's start timeout), and
// ROW_DEADLINE_MS from when a look first saw it running — in webhook mode (the reconciler's looks) and
// in poll mode (the poll jobs' looks), so a row that waited long in fal's queue is not killed for the
// time it waited. The emulator runs one request at a time for 30 s, so one row runs and one waits; the
// reconciler's sweep is called with its clock moved forward instead of waiting for either deadline.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createFal } from '../src/core/fal.ts';
import type { Row } from '../src/core/rowState.ts';
import { produceRun } from '../src/producer/produce.ts';
import { waitForRun } from '../src/producer/wait.ts';
import { reconcileStaleRequests } from '../src/worker/reconcile.ts';
import { faceDataUri } from './helpers/faces.ts';
import { meta } from './helpers/runOutputs.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';
import { until } from './security/helpers.ts';

const QUEUE_DEADLINE_MS = 600_000;
/** Longer than the queue deadline in webhook mode: a queue deadline computed from it would not fire. */
const ROW_DEADLINE_WEBHOOK_MS = 1_200_000;
/** Shorter in poll mode: a row deadline counted from submit would fire for the row that waited. */
const ROW_DEADLINE_POLL_MS = 60_000;
const GRACE = 60_000;
/** One request at a time, each 30 s; a cancel stops a running one (the next one starts at once). */
const SLOW_FAL = { slots: 1, latencyMs: { min: 30_000, max: 30_000 }, runningCancelCompletesRate: 0 };

async function twoRows(t: TestStack, name: string) {
  const face = await faceDataUri(7);
  const { runId } = await produceRun(t.ctx, await t.manifest(`${name}.csv`, `id,face_url\n${name}0,"${face}"\n${name}1,"${face}"\n`));
  const read = async () => Promise.all([`${name}0`, `${name}1`].map(async (k) => (await t.ctx.rows.getRow(runId, k))!));
  await until(async () => (await read()).every((r) => r?.state === 'submitted'), 'both rows submitted to fal', 30_000);
  return { runId, read };
}

const stateAt = async (t: TestStack, runId: string, key: string) => (await t.ctx.rows.getRow(runId, key))?.state ?? (await meta(t, runId, key))?.status;

describe('webhook mode', () => {
  let t: TestStack;
  before(async () => {
    t = await startTestStack({
      emulator: SLOW_FAL,
      env: {
        FAL_CONCURRENCY: '2',
        QUEUE_DEADLINE_MS: String(QUEUE_DEADLINE_MS),
        ROW_DEADLINE_MS: String(ROW_DEADLINE_WEBHOOK_MS),
        RECONCILE_INTERVAL_MS: '600000',
        RECONCILE_GRACE_MS: String(GRACE),
      },
    });
  });
  after(() => t.stop());

  test('never seen started: fails at QUEUE_DEADLINE_MS of its submission; seen running: held to ROW_DEADLINE_MS of its start', { timeout: 90_000 }, async () => {
    const { runId, read } = await twoRows(t, 'wh');
    // The start timeout fal was given is the queue deadline, in seconds.
    for (const r of await read()) {
      const sent = (await (await fetch(`${t.local.emulator!.url}/_emulator/requests/${r.requestId}`)).json()) as { falHeaders: Record<string, string> };
      assert.equal(sent.falHeaders['x-fal-request-timeout'], String(QUEUE_DEADLINE_MS / 1000), `${r.key}: start timeout sent to fal`);
    }
    // No webhook within the grace period: the sweep looks at both; one is running, the other queued.
    const t1 = Math.max(...(await read()).map((r) => r.submittedAt!)) + GRACE + 1;
    assert.equal((await reconcileStaleRequests(t.ctx, t1)).polled, 2);
    const rows = await read();
    const running = rows.find((r) => r.falStatus === 'IN_PROGRESS') as Row;
    const queued = rows.find((r) => r.falStatus === 'IN_QUEUE') as Row;
    assert.ok(running && queued, `one running, one queued (${rows.map((r) => r.falStatus).join(', ')})`);
    assert.equal(running.startedAt, t1, 'started as of the look that saw it running');
    assert.equal(queued.startedAt, undefined);

    // Just within the queue deadline: nothing ends.
    assert.equal((await reconcileStaleRequests(t.ctx, queued.submittedAt! + QUEUE_DEADLINE_MS)).timedOut, 0);
    // Past it: the queued one fails (and is canceled at fal); the running one goes on.
    const canceled = t.local.emulator!.stats().canceled;
    const swept = await reconcileStaleRequests(t.ctx, queued.submittedAt! + QUEUE_DEADLINE_MS + 1);
    assert.equal(swept.timedOut, 1);
    assert.equal(await stateAt(t, runId, queued.key), 'failed');
    assert.match((await meta(t, runId, queued.key))!.error ?? '', new RegExp(`queue deadline \\(${QUEUE_DEADLINE_MS} ms\\)`));
    assert.equal(t.local.emulator!.stats().canceled - canceled, 1, 'the queued request canceled at fal');
    assert.equal(await stateAt(t, runId, running.key), 'submitted', 'the running one is held to the row deadline');

    // The row deadline counts from its start.
    assert.equal((await reconcileStaleRequests(t.ctx, t1 + ROW_DEADLINE_WEBHOOK_MS)).timedOut, 0);
    assert.equal((await reconcileStaleRequests(t.ctx, t1 + ROW_DEADLINE_WEBHOOK_MS + 1)).timedOut, 1);
    assert.match((await meta(t, runId, running.key))!.error ?? '', new RegExp(`row deadline \\(${ROW_DEADLINE_WEBHOOK_MS} ms\\) of starting it`));
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 30_000 });
    assert.deepEqual([run.completed, run.failed], [0, 2]);
  });
});

describe('poll mode', () => {
  let t: TestStack;
  before(async () => {
    t = await startTestStack({
      emulator: SLOW_FAL,
      env: {
        RESULT_DELIVERY: 'poll',
        FAL_CONCURRENCY: '2',
        QUEUE_DEADLINE_MS: String(QUEUE_DEADLINE_MS),
        ROW_DEADLINE_MS: String(ROW_DEADLINE_POLL_MS),
        RECONCILE_INTERVAL_MS: '600000',
      },
    });
  });
  after(() => t.stop());

  test('a row that waited in fal\'s queue: its row deadline counts from when a poll saw it running, not from its submission', { timeout: 90_000 }, async () => {
    const { runId, read } = await twoRows(t, 'pl');
    // The poll jobs see one running and the other waiting behind it.
    let rows: Row[] = [];
    await until(
      async () => {
        rows = await read();
        return rows.some((r) => r.startedAt !== undefined) && rows.some((r) => r.falStatus === 'IN_QUEUE');
      },
      'a poll saw one request running and the other queued',
      30_000,
    );
    const first = rows.find((r) => r.startedAt !== undefined)!;
    const late = rows.find((r) => r !== first)!;
    // The running one is canceled at fal: the waiting one starts now, well after its submission.
    await createFal({ FAL_KEY: 'emulator-key', FAL_QUEUE_URL: t.local.emulator!.url }).queue.cancel(t.ctx.cfg.FAL_ENDPOINT, { requestId: first.requestId! });
    let started: Row | undefined;
    await until(
      async () => {
        started = await t.ctx.rows.getRow(runId, late.key);
        return started?.startedAt !== undefined;
      },
      'a poll saw the waiting request running',
      30_000,
    );
    const { submittedAt, startedAt } = started as Row & { submittedAt: number; startedAt: number };
    assert.ok(startedAt - submittedAt >= 1000, `started ${startedAt - submittedAt} ms after its submission, as first seen by a poll`);
    // Past ROW_DEADLINE_MS from its submission, within it from its start: it goes on.
    assert.ok(startedAt + ROW_DEADLINE_POLL_MS - 1 > submittedAt + ROW_DEADLINE_POLL_MS);
    await reconcileStaleRequests(t.ctx, startedAt + ROW_DEADLINE_POLL_MS - 1);
    assert.equal(await stateAt(t, runId, late.key), 'submitted', 'not killed for the time it waited in the queue');
    // Past it from its start: fails with the row deadline, canceled at fal.
    const canceled = t.local.emulator!.stats().canceled;
    await reconcileStaleRequests(t.ctx, startedAt + ROW_DEADLINE_POLL_MS + 1);
    assert.equal(await stateAt(t, runId, late.key), 'failed');
    assert.match((await meta(t, runId, late.key))!.error ?? '', new RegExp(`row deadline \\(${ROW_DEADLINE_POLL_MS} ms\\) of starting it`));
    assert.equal(t.local.emulator!.stats().canceled - canceled, 1);
  });

  test('a request never seen started fails at QUEUE_DEADLINE_MS of its submission, not at ROW_DEADLINE_MS', { timeout: 90_000 }, async () => {
    const { runId, read } = await twoRows(t, 'pq');
    let rows: Row[] = [];
    await until(
      async () => {
        rows = await read();
        return rows.some((r) => r.falStatus === 'IN_QUEUE') && rows.some((r) => r.startedAt !== undefined);
      },
      'a poll saw one request queued behind the other',
      30_000,
    );
    const queued = rows.find((r) => r.falStatus === 'IN_QUEUE')!;
    // Past ROW_DEADLINE_MS from its submission: a request fal has not started is not held to it.
    await reconcileStaleRequests(t.ctx, queued.submittedAt! + ROW_DEADLINE_POLL_MS + 1);
    assert.equal(await stateAt(t, runId, queued.key), 'submitted');
    // Past QUEUE_DEADLINE_MS from its submission (one sweep: a look in between could see it start).
    await reconcileStaleRequests(t.ctx, queued.submittedAt! + QUEUE_DEADLINE_MS + 1);
    assert.equal(await stateAt(t, runId, queued.key), 'failed');
    assert.match((await meta(t, runId, queued.key))!.error ?? '', /queue deadline/);
  });
});
