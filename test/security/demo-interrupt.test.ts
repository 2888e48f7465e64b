// Ctrl-C of `demo`, then rerun: the embedded stack comes back on the same ports from the same data
// dir, its private Redis is stopped with it (no orphan), one data dir never runs two stacks, and a
// rerun after an interrupt pays for no row twice (the emulator's books are kept in the data dir).
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { hasStack, lines, runCli } from '../helpers/cli.ts';

const withDataDir = async (fn: (dir: string) => Promise<void>) => {
  const dir = await mkdtemp(join(tmpdir(), 'pb-demo-int-'));
  try {
    await fn(dir);
  } finally {
    // A failed assertion must not leave a redis-server behind.
    const port = await keptPorts(dir).then((p) => p.redis, () => undefined);
    if (port) for (const pid of redisServersOn(port)) process.kill(pid, 'SIGKILL');
    await rm(dir, { recursive: true, force: true });
  }
};

const keptPorts = async (dir: string) => (JSON.parse(await readFile(join(dir, 'stack.json'), 'utf8')) as { ports: Record<string, number> }).ports;

/** Pids of redis-server processes serving 127.0.0.1:port (from /proc: its title names the address). */
function redisServersOn(port: number): number[] {
  const pids: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (cmd.includes('redis-server') && cmd.includes(`:${port}`)) pids.push(Number(p));
    } catch {
      /* gone meanwhile */
    }
  }
  return pids;
}

/** Accepted submissions per row, from the emulator's request log in the data dir. */
async function acceptedByRow(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const line of (await readFile(join(dir, 'emulator', 'requests.jsonl'), 'utf8')).split('\n')) {
    if (!line) continue;
    const e = JSON.parse(line) as { t: string; webhookUrl?: string };
    if (e.t !== 'accept') continue;
    const row = new URL(e.webhookUrl!).searchParams.get('row')!;
    out.set(row, (out.get(row) ?? 0) + 1);
  }
  return out;
}

const demo = (dir: string, ...more: string[]) => runCli(['demo', '--data-dir', dir, ...more]);

test('demo interrupted mid-run, then rerun: every row completes and fal accepted each row exactly once', { timeout: 180_000 }, () =>
  withDataDir(async (dir) => {
    const first = demo(dir);
    await first.waitForLine(/"completed":[1-9]/); // a progress line: some rows are done, others in flight
    first.child.kill('SIGINT');
    const stopped = await first.exited;
    assert.equal(stopped.code, 130, `exit code of the interrupted demo:\n${stopped.stderr}`);
    assert.match(lines(stopped.stderr).at(-1)!, /interrupted by SIGINT/);
    assert.ok(!/finished/.test(stopped.stderr), 'the interrupt landed mid-run');
    assert.ok(!hasStack(stopped.stderr), stopped.stderr);
    const ports = await keptPorts(dir);
    assert.deepEqual(redisServersOn(ports.redis!), [], 'the private redis-server stopped with the demo');
    const before = await acceptedByRow(dir);
    assert.ok(before.size >= 1, 'some rows were submitted before the interrupt');

    const second = demo(dir, '--json');
    const done = await second.exited;
    assert.equal(done.code, 0, done.stderr);
    const res = JSON.parse(lines(done.stdout).at(-1)!) as { completed: number; failed: number; rejected: number; outputDir: string };
    assert.deepEqual([res.completed, res.failed, res.rejected], [12, 0, 1], done.stderr);
    assert.deepEqual(await keptPorts(dir), ports, 'the stack came back on the same ports');
    const accepted = await acceptedByRow(dir);
    assert.equal(accepted.size, 12);
    for (const [row, n] of accepted) assert.equal(n, 1, `fal accepted row ${row} ${n} times`);
    const summary = JSON.parse(await readFile(join(res.outputDir, 'summary.json'), 'utf8')) as { submits: number };
    assert.equal(summary.submits, 12);
    assert.deepEqual(redisServersOn(ports.redis!), []);
  }),
);

test('a second demo on the same data dir is refused while the first runs; SIGTERM stops the first and its Redis', { timeout: 120_000 }, () =>
  withDataDir(async (dir) => {
    // --keep-alive: the first demo holds its data dir until it is stopped, however long the second
    // one takes to start (without it, on a loaded machine the first could finish and free the dir).
    const first = demo(dir, '--keep-alive');
    await first.waitForLine(/^stack: /);
    const second = await demo(dir).exited;
    assert.equal(second.code, 1);
    assert.equal(lines(second.stderr).length, 1, second.stderr);
    assert.match(second.stderr, new RegExp(`in use by another portrait-batch \\(pid ${first.child.pid}\\)`));
    assert.ok(!hasStack(second.stderr));
    const ports = await keptPorts(dir);
    assert.equal(redisServersOn(ports.redis!).length, 1, 'one Redis on the data dir');
    first.child.kill('SIGTERM');
    const r = await first.exited;
    // 143 when the SIGTERM lands mid-run, 0 when the run had finished and the demo was only serving.
    assert.ok(r.code === 143 || r.code === 0, `exit code ${r.code}:\n${r.stderr}`);
    assert.ok(!hasStack(r.stderr), r.stderr);
    assert.deepEqual(redisServersOn(ports.redis!), [], 'no orphaned redis-server');
  }),
);

test('after a demo is SIGKILLed, the next one on its data dir stops the leftover Redis and finishes the run', { timeout: 180_000 }, () =>
  withDataDir(async (dir) => {
    const first = demo(dir);
    await first.waitForLine(/^stack: /);
    const ports = await keptPorts(dir);
    first.child.kill('SIGKILL');
    await first.exited;
    const leftover = redisServersOn(ports.redis!);
    assert.equal(leftover.length, 1, 'SIGKILL leaves the redis-server behind');
    const second = await demo(dir, '--json').exited;
    assert.equal(second.code, 0, second.stderr);
    const res = JSON.parse(lines(second.stdout).at(-1)!) as { completed: number; rejected: number };
    assert.deepEqual([res.completed, res.rejected], [12, 1]);
    assert.deepEqual(redisServersOn(ports.redis!), [], 'the leftover and the new Redis are both gone');
    for (const [row, n] of await acceptedByRow(dir)) assert.equal(n, 1, `fal accepted row ${row} ${n} times`);
  }),
);

test('a kept port now taken by another program is named in one sentence', { timeout: 60_000 }, () =>
  withDataDir(async (dir) => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    const port = (taken.address() as { port: number }).port;
    try {
      await writeFile(join(dir, 'stack.json'), JSON.stringify({ ports: { emulator: port } }));
      const r = await demo(dir).exited;
      assert.equal(r.code, 1);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
      assert.match(r.stderr, new RegExp(`port ${port} of the fal emulator, kept in .*stack\\.json`));
      assert.ok(!hasStack(r.stderr));
    } finally {
      taken.close();
    }
  }),
);
