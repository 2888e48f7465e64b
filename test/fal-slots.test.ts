// FAL_CONCURRENCY and the deadlines: fal queues whatever it is sent, so the rows wait here for one of
// its places instead of in fal's queue; a row's deadline counts from when fal starts its request, so a
// long run through few places fails nothing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { produceRun } from '../src/producer/produce.ts';
import { waitForRun } from '../src/producer/wait.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack } from './helpers/stack.ts';

test('60 rows through fal\'s 2 places finish without deadline failures, never queued at fal', async () => {
  // A row deadline far shorter than the run (30 rounds through 2 places, eight submit jobs contending
  // for them each round): counted from the submit (as before), most rows would wait in fal's queue past
  // it and fail.
  const t = await startTestStack({
    env: { FAL_CONCURRENCY: '2', ROW_DEADLINE_MS: '1000', RUN_WINDOW: '1000' },
    emulator: { slots: 2, latencyMs: { min: 2, max: 8 }, sizeScale: 0.05 },
  });
  try {
    const rows = 60;
    const face = await faceDataUri(5);
    const lines = ['id,face_url', ...Array.from({ length: rows }, (_, i) => `s${i},"${face}"`)];
    const { runId } = await produceRun(t.ctx, await t.manifest('slots.csv', `${lines.join('\n')}\n`));
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 120_000 });
    assert.deepEqual([run.completed, run.failed], [rows, 0]);
    const stats = t.local.emulator!.stats();
    assert.equal(stats.accepted, rows, 'each row submitted once');
    assert.equal(stats.maxQueued, 0, 'no request ever waited in fal\'s queue');
    assert.equal(stats.canceled, 0);
  } finally {
    await t.stop();
  }
});
