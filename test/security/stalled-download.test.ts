// A result server that sends headers and half a body, then stalls: the download times out, which is a
// retryable failure of that row only, tried STORE_MAX_TRIES times. The worker runs as its own process,
// as in production, and must live on and finish the other rows.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { runLayout } from '../../src/core/layout.ts';
import { produceRun } from '../../src/producer/produce.ts';
import { waitForRun } from '../../src/producer/wait.ts';
import type { RowMeta } from '../../src/worker/flush.ts';
import { faceDataUri } from '../helpers/faces.ts';
import { stallHalfway, startHostileCdn, type HostileCdn } from '../helpers/hostileCdn.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';

const CLI = fileURLToPath(new URL('../../bin/portrait-batch.js', import.meta.url));
const STORE_MAX_TRIES = 3;

let cdn: HostileCdn;
let t: TestStack;
let worker: ChildProcess;
let workerOutput = '';

before(async () => {
  cdn = await startHostileCdn();
  t = await startTestStack({
    workers: false,
    emulator: { publicUrl: cdn.url },
    env: { STORE_MAX_TRIES: String(STORE_MAX_TRIES), STORE_RETRY_DELAY_MS: '50', DOWNLOAD_TIMEOUT_MS: '1000', LOG_LEVEL: 'warn' },
  });
  cdn.forwardTo(t.local.emulator!.port);
  cdn.answer('webp', stallHalfway);
  worker = spawn(process.execPath, [CLI, 'worker'], { env: { ...process.env, ...t.local.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  worker.stdout!.on('data', (d: Buffer) => (workerOutput += d.toString()));
  worker.stderr!.on('data', (d: Buffer) => (workerOutput += d.toString()));
});

after(async () => {
  if (worker.exitCode === null && worker.signalCode === null) {
    worker.kill('SIGTERM');
    await once(worker, 'exit');
  }
  await t.stop();
  await cdn.close();
});

test('a stalled result body fails only its row, after STORE_MAX_TRIES tries, and the worker process lives on', async () => {
  const rows = ['id,face_url,output_format'];
  for (let i = 0; i < 4; i++) rows.push(`ok-${i},"${await faceDataUri(i)}",png`);
  rows.push(`stalled,"${await faceDataUri(9)}",webp`);
  const { runId } = await produceRun(t.ctx, await t.manifest('m.csv', `${rows.join('\n')}\n`));

  const died = once(worker, 'exit').then(([code, signal]) => {
    throw new Error(`the worker process died (exit ${code}, ${signal}):\n${workerOutput.slice(-2000)}`);
  });
  const run = await Promise.race([waitForRun(t.ctx, runId, { timeoutMs: 60_000, intervalMs: 100 }), died]);

  assert.deepEqual([run.completed, run.failed], [4, 1]);
  const meta = await t.ctx.storage.getJson<RowMeta>(runLayout(t.ctx.cfg.S3_PREFIX, runId).meta('stalled'));
  assert.equal(meta?.status, 'failed');
  assert.match(meta?.error ?? '', /did not finish within DOWNLOAD_TIMEOUT_MS \(1000 ms\).*tried 3 times/);
  assert.equal(cdn.gets('webp'), STORE_MAX_TRIES, 'one download per try, no more');
  assert.equal(worker.exitCode, null, 'the worker process is still running');
});
