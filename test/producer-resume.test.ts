// kill -9 of the producer mid-manifest: running the same manifest again resumes from its cursor, and
// every row ends exactly once, with nothing submitted twice.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { auditRun } from '../src/audit.ts';
import { loadConfig } from '../src/core/config.ts';
import { createContext } from '../src/core/context.ts';
import { produceRun } from '../src/producer/produce.ts';
import { waitForRun } from '../src/producer/wait.ts';
import { startWorkers } from '../src/worker/index.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack } from './helpers/stack.ts';

const CLI = fileURLToPath(new URL('../bin/portrait-batch.js', import.meta.url));

test('a producer killed mid-manifest resumes from its cursor on rerun, even with another window', { timeout: 120_000 }, async () => {
  const t = await startTestStack({ workers: false, env: { RUN_WINDOW: '10' } });
  try {
    const face = await faceDataUri(3);
    const lines = ['id,face_url'];
    for (let i = 0; i < 60; i++) lines.push(`k${i},"${face}"`);
    const manifest = await t.manifest('resume.csv', `${lines.join('\n')}\n`);

    // No workers yet: the producer fills its window of 10 and waits; then it is killed.
    const child = spawn(process.execPath, [CLI, 'run', manifest, '--run-id', 'resume-1'], { env: { ...process.env, ...t.local.env }, stdio: 'ignore' });
    let run = await t.ctx.rows.getRun('resume-1');
    for (let i = 0; i < 200 && !(run && run.queued >= 10); i++) {
      await sleep(50);
      run = await t.ctx.rows.getRun('resume-1');
    }
    assert.ok(run && run.queued >= 10 && run.queued < 60, `the producer stopped at its window (queued ${run?.queued})`);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));

    // The rerun has another window, so its batches (15 rows) straddle the cursor the first one left
    // (after 10 rows): only the cursor keeps the rows before it from being queued again.
    const wider = createContext(loadConfig({ ...t.local.env, RUN_WINDOW: '15' }), 'rerun');
    const workers = await startWorkers(t.ctx);
    try {
      const res = await produceRun(wider, manifest, { runId: 'resume-1' });
      assert.equal(res.resumed, true);
      const done = await waitForRun(t.ctx, 'resume-1', { timeoutMs: 60_000 });
      assert.deepEqual([done.total, done.completed, done.queued], [60, 60, 60]);
      const audit = await auditRun(t.ctx, 'resume-1', { acceptedByRow: t.local.emulator!.stats().acceptedByRow });
      assert.deepEqual(audit.problems, []);
      assert.equal(t.local.emulator!.stats().accepted, 60, 'each row paid once');
    } finally {
      await workers.close();
      await wider.close();
    }
  } finally {
    await t.stop();
  }
});
