// `portrait-batch demo --keep-alive --json`: the JSON summary (with dashboardUrl) comes when the run
// ends, the dashboard, metrics and health are served after it, and SIGTERM ends it with exit 0 in time.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const CLI = fileURLToPath(new URL('../bin/portrait-batch.js', import.meta.url));

test('demo --keep-alive --json prints its summary with dashboardUrl, keeps serving, and exits 0 on SIGTERM', { timeout: 180_000 }, async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'pb-keepalive-'));
  const env = { ...process.env };
  for (const k of ['REDIS_URL', 'S3_ENDPOINT', 'FAL_QUEUE_URL', 'WEBHOOK_PORT', 'WEBHOOK_PUBLIC_URL', 'ADMIN_PORT', 'DASHBOARD_TOKEN', 'SCHEDULES_FILE', 'DROP_PREFIX']) delete env[k];
  const child = spawn(process.execPath, [CLI, 'demo', '--keep-alive', '--json', '--data-dir', dataDir], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  try {
    const line = await new Promise<string>((resolve, reject) => {
      let out = '';
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('\n')) resolve(out.slice(0, out.indexOf('\n')));
      });
      child.once('exit', (code) => reject(new Error(`demo exited with ${code} before printing:\n${stderr}`)));
    });
    const res = JSON.parse(line) as { runId: string; state: string; completed: number; dashboardUrl: string; adminUrl: string };
    assert.equal(res.state, 'finished');
    assert.equal(res.completed, 12);
    const url = new URL(res.dashboardUrl);
    assert.equal(url.hostname, '127.0.0.1');
    assert.equal(url.pathname, `/ui/runs/${res.runId}`);
    assert.ok(url.searchParams.get('token'), 'the local demo link carries its token');

    // Still serving after the summary: the dashboard (signed in by the link), metrics and health.
    const page = await fetch(res.dashboardUrl);
    assert.equal(page.status, 200);
    assert.match(await page.text(), new RegExp(`Run <code>${res.runId}</code>`));
    assert.equal((await fetch(new URL('/ui', res.dashboardUrl))).status, 401, 'not without the token');
    const metrics = await (await fetch(`${res.adminUrl}/metrics`)).text();
    assert.match(metrics, /portrait_batch_stores_total\{outcome="completed"\} 12/);
    assert.equal((await fetch(`${res.adminUrl}/healthz`)).status, 200);
    assert.equal((await fetch(`${res.adminUrl}/readyz`)).status, 200);
    assert.equal(child.exitCode, null, 'still running');

    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    const [code, signal] = await exited;
    clearTimeout(timer);
    assert.equal(signal, null, `still running 10 s after SIGTERM:\n${stderr}`);
    assert.equal(code, 0, stderr);
  } finally {
    child.kill('SIGKILL');
    await rm(dataDir, { recursive: true, force: true });
  }
});
