// SIGTERM in real processes: a worker stopped mid-run exits 0 in time and loses nothing (a new worker
// completes every row, each paid once); worker and webhook processes exit 0 within 10 s even when
// Redis is gone.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { auditRun } from '../src/audit.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

const CLI = fileURLToPath(new URL('../bin/portrait-batch.js', import.meta.url));
/** What an orchestrator allows between SIGTERM and SIGKILL. */
const EXIT_WITHIN_MS = 10_000;

interface Role {
  child: ChildProcess;
  adminUrl: string;
  stderr(): string;
}

/** Starts `portrait-batch <role>` on the stack and resolves once it says it is running (with its admin address). */
async function startRole(t: TestStack, role: 'worker' | 'webhook', env: Record<string, string> = {}): Promise<Role> {
  const child = spawn(process.execPath, [CLI, role], { env: { ...process.env, ...t.local.env, LOG_LEVEL: 'warn', ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const adminUrl = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /admin on (http:\/\/\S+)/.exec(err);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`${role} exited with ${code} before it ran:\n${err}`)));
  });
  return { child, adminUrl, stderr: () => err };
}

/** SIGTERM, then the exit code; fails when the process is still there after EXIT_WITHIN_MS. */
async function terminate(r: Role): Promise<number | null> {
  const exited = once(r.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  r.child.kill('SIGTERM');
  const timer = setTimeout(() => r.child.kill('SIGKILL'), EXIT_WITHIN_MS);
  const [code, signal] = await exited;
  clearTimeout(timer);
  assert.equal(signal, null, `still running ${EXIT_WITHIN_MS / 1000} s after SIGTERM (killed):\n${r.stderr()}`);
  return code;
}

test('SIGTERM to a worker mid-run: it exits 0, and a new worker completes every row, each paid once', { timeout: 180_000 }, async () => {
  // fal takes a while per request, so the run is surely in progress when the signal comes.
  const t = await startTestStack({ workers: false, emulator: { latencyMs: { min: 300, max: 700 }, slots: 4 } });
  let first: Role | undefined;
  let second: Role | undefined;
  try {
    const rows = 24;
    const lines = ['id,face_url'];
    for (let i = 0; i < rows; i++) lines.push(`r${i},"${await faceDataUri(i)}"`);
    const { runId } = await t.pb.startRun(await t.manifest('m.csv', `${lines.join('\n')}\n`));

    first = await startRole(t, 'worker');
    const health = await fetch(`${first.adminUrl}/healthz`);
    assert.equal(health.status, 200, 'the worker answers its health check');
    for (;;) {
      const s = (await t.pb.status(runId))!;
      if (s.completed >= 3) break;
      await sleep(50);
    }
    assert.equal(await terminate(first), 0, `exit code 0 after SIGTERM:\n${first.stderr()}`);
    const mid = (await t.pb.status(runId))!;
    assert.ok(mid.done < rows, `the run was still going when the worker stopped (${mid.done}/${rows})`);

    second = await startRole(t, 'worker');
    const run = await t.pb.waitForRun(runId, { timeoutMs: 120_000 });
    assert.deepEqual([run.state, run.completed, run.failed, run.canceled], ['finished', rows, 0, 0], 'nothing lost, no row failed');
    const stats = t.local.emulator!.stats();
    const audit = await auditRun(t.ctx, runId, { acceptedByRow: stats.acceptedByRow });
    assert.deepEqual(audit.problems, []);
    for (let i = 0; i < rows; i++) assert.equal(stats.acceptedByRow[`${runId}/r${i}`], 1, `row r${i} paid once`);
    assert.equal(stats.billed, rows);
    assert.equal(await terminate(second), 0);
    second = undefined;
  } finally {
    first?.child.kill('SIGKILL');
    second?.child.kill('SIGKILL');
    await t.stop();
  }
});

test('with Redis down, SIGTERM still ends the worker and the webhook receiver with exit 0 within 10 s', { timeout: 120_000 }, async () => {
  const t = await startTestStack({ workers: false, webhook: false });
  const roles: Role[] = [];
  try {
    roles.push(await startRole(t, 'worker'), await startRole(t, 'webhook'));
    await t.local.redis!.stop();
    // Each process notices: its readiness names Redis.
    for (const r of roles) {
      const ready = await fetch(`${r.adminUrl}/readyz`);
      assert.equal(ready.status, 503);
      assert.deepEqual(((await ready.json()) as { down: string[] }).down, ['redis']);
    }
    const codes = await Promise.all(roles.map(terminate));
    assert.deepEqual(codes, [0, 0], roles.map((r) => r.stderr()).join('\n---\n'));
  } finally {
    for (const r of roles) r.child.kill('SIGKILL');
    await t.stop();
  }
});

test('a second SIGTERM while a role is still stopping exits at once with 143, as a second signal does in every command', { timeout: 120_000 }, async () => {
  const t = await startTestStack({ workers: false, webhook: false });
  let worker: Role | undefined;
  try {
    worker = await startRole(t, 'worker');
    // With Redis gone the worker cannot finish stopping before its grace period: the second signal lands while it tries.
    await t.local.redis!.stop();
    const ready = await fetch(`${worker.adminUrl}/readyz`);
    assert.equal(ready.status, 503);
    const exited = once(worker.child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    const stopping = new Promise<void>((resolve) => {
      const seen = () => /SIGTERM: stopping/.test(worker!.stderr()) && resolve();
      worker!.child.stderr!.on('data', seen);
      seen();
    });
    worker.child.kill('SIGTERM');
    await stopping;
    worker.child.kill('SIGTERM');
    const [code, signal] = await exited;
    assert.deepEqual([code, signal], [143, null], worker.stderr());
    assert.match(worker.stderr(), /SIGTERM again: exiting at once/);
    assert.doesNotMatch(worker.stderr(), /not stopped within/, 'it did not wait out the grace period');
    worker = undefined;
  } finally {
    worker?.child.kill('SIGKILL');
    await t.stop();
  }
});
