// Producing is a job: `run` returns as soon as the run is recorded, a worker process produces it, and a
// producer SIGKILLed mid-manifest (its window full) is continued by another worker from the cursor,
// every row ending exactly once, with nothing submitted twice.
import assert from 'node:assert/strict';
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import { auditRun } from '../src/audit.ts';
import { loadConfig } from '../src/core/config.ts';
import { createPortraitBatch } from '../src/index.ts';
import { freePort } from '../src/local/ports.ts';
import { faceDataUri } from './helpers/faces.ts';
import { TEST_POLICY, startTestStack } from './helpers/stack.ts';

const CLI = fileURLToPath(new URL('../bin/portrait-batch.js', import.meta.url));
const run = promisify(execFile);
/** Every wait of this test is bounded: a hung process fails the test instead of hanging the suite. */
const BOUND_MS = 60_000;

/** A promise that rejects naming what did not finish when it takes longer than BOUND_MS. */
function within<T>(what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not finish within ${BOUND_MS} ms`)), BOUND_MS);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/** Kills a child (if it still runs) and waits for its exit, at most BOUND_MS. */
async function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit', { signal: AbortSignal.timeout(BOUND_MS) });
  child.kill('SIGKILL');
  await exited;
}

test('run returns at once; a worker killed mid-manifest is continued from its cursor by another', { timeout: 120_000 }, async () => {
  const t = await within('starting the test stack', startTestStack({ workers: false, env: { RUN_WINDOW: '10' } }));
  try {
    const face = await faceDataUri(3);
    const lines = ['id,face_url'];
    for (let i = 0; i < 60; i++) lines.push(`k${i},"${face}"`);
    const manifest = await t.manifest('resume.csv', `${lines.join('\n')}\n`);

    // No worker runs: `run` records the run and returns with its id; nothing is read into the window yet.
    const { stdout } = await run(process.execPath, [CLI, 'run', manifest, '--run-id', 'resume-1'], { env: { ...process.env, ...t.local.env }, timeout: BOUND_MS });
    assert.equal(stdout.trim(), 'resume-1');
    const recorded = (await t.ctx.rows.getRun('resume-1'))!;
    assert.equal(recorded.state, 'running');
    assert.equal(recorded.queued, 0, 'the CLI produced nothing itself');

    // A worker process whose fal never answers: it produces up to its window of 10, then waits; killed.
    const deadFal = `http://127.0.0.1:${await freePort()}`;
    const child = spawn(process.execPath, [CLI, 'worker'], { env: { ...process.env, ...t.local.env, FAL_QUEUE_URL: deadFal, JOB_LOCK_MS: '2000' }, stdio: 'ignore' });
    try {
      let r = await t.ctx.rows.getRun('resume-1');
      for (let i = 0; i < 400 && !(r && r.queued >= 10); i++) {
        await sleep(50);
        r = await t.ctx.rows.getRun('resume-1');
      }
      assert.ok(r && r.queued >= 10 && r.queued < 60, `the producer stopped at its window (queued ${r?.queued})`);
    } finally {
      await killAndWait(child);
    }

    // Workers here pick up the stalled produce job and continue from the cursor. They have another
    // window, so their batches (15 rows) straddle the cursor the first one left (after 10 rows): only
    // the cursor keeps the rows before it from being queued again.
    const wider = createPortraitBatch(loadConfig({ ...t.local.env, RUN_WINDOW: '15' }), { name: 'rerun', policy: TEST_POLICY });
    try {
      await within('starting the workers', wider.startWorkers());
      const done = await t.pb.waitForRun('resume-1', { timeoutMs: 90_000 });
      assert.deepEqual([done.total, done.completed, done.queued], [60, 60, 60]);
      const audit = await within('the audit', auditRun(t.ctx, 'resume-1', { acceptedByRow: t.local.emulator!.stats().acceptedByRow }));
      assert.deepEqual(audit.problems, []);
      assert.equal(t.local.emulator!.stats().accepted, 60, 'each row paid once');
    } finally {
      await within('closing the workers', wider.close());
    }
  } finally {
    await within('stopping the test stack', t.stop());
  }
});
