// A Redis that answers but refuses every write (MISCONF: its last snapshot failed, as on a full disk)
// must not turn the workers into a busy loop: BullMQ fetches again at once after errors it does not
// take for connection errors. Here the test's own redis-server is made to refuse writes (a background
// save whose child the test kills: "unable to persist to disk") and then to take them again; the
// workers' errors and the log lines are counted, not timed.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { Redis } from 'ioredis';
import type { DestinationStream } from 'pino';
import { readiness } from '../src/ops/health.ts';
import { produceRun } from '../src/producer/produce.ts';
import { waitForRun } from '../src/producer/wait.ts';
import { eventually } from './helpers/eventually.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack } from './helpers/stack.ts';

interface LogLine {
  level: number;
  msg: string;
}

function captureLog(): DestinationStream & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  return {
    lines,
    write(s: string) {
      for (const l of s.split('\n').filter(Boolean)) lines.push(JSON.parse(l) as LogLine);
    },
  };
}

/** Makes the test's redis-server refuse writes: a background save that cannot finish (its child killed by us). */
async function failBackgroundSave(admin: Redis, serverPid: number): Promise<void> {
  await admin.config('SET', 'save', '3600 1');
  await admin.config('SET', 'rdb-key-save-delay', '1000000'); // a second per key: the save child lives on
  await admin.bgsave();
  const child = await eventually(() => {
    const out = execFileSync('ps', ['--ppid', String(serverPid), '-o', 'pid='], { encoding: 'utf8' }).trim();
    return out ? Number(out.split('\n')[0]) : undefined;
  }, 'the background save child of our redis-server');
  process.kill(child, 'SIGKILL'); // a child of the redis-server this test started, found by its parent's PID
  await eventually(async () => /rdb_last_bgsave_status:err/.test(await admin.info('persistence')), 'the failed save recorded');
}

async function healBackgroundSave(admin: Redis): Promise<void> {
  await admin.config('SET', 'rdb-key-save-delay', '0');
  await admin.bgsave();
  await eventually(async () => /rdb_last_bgsave_status:ok/.test(await admin.info('persistence')), 'a save that succeeded');
}

async function redisUp(text: string): Promise<string | undefined> {
  return /^portrait_batch_dependency_up\{dependency="redis"\} (\d)$/m.exec(text)?.[1];
}

test('Redis refusing writes (MISCONF): workers back off instead of spinning, one warning and one recovery line, readyz and the metric flip, work goes on after', async () => {
  const log = captureLog();
  const t = await startTestStack({ env: { LOG_LEVEL: 'info' }, log });
  const admin = new Redis(t.local.env.REDIS_URL!, { maxRetriesPerRequest: 1 });
  let errors = 0;
  for (const w of t.workers!.workers) w.on('error', () => errors++);
  try {
    const before = log.lines.length;
    await failBackgroundSave(admin, t.local.redis!.process.pid!);
    await eventually(() => t.ctx.dependencies.isDown('redis'), 'the workers noticed Redis refusing writes');
    const outage = t.ctx.dependencies.local().find((o) => o.dependency === 'redis')!;
    assert.match(outage.reason, /MISCONF/);

    // Let the outage last while the probe keeps failing: a busy loop would make thousands of errors.
    await eventually(() => Date.now() - outage.since > 4000, 'an outage of a few seconds', 20_000, 200);
    const ready = await readiness(t.ctx);
    assert.equal(ready.ready, false);
    assert.ok(ready.down.includes('redis'), JSON.stringify(ready));
    assert.equal(await redisUp(await t.ctx.metrics.registry.metrics()), '0');
    const duringOutage = log.lines.slice(before);
    assert.ok(errors <= 4 * t.workers!.workers.length, `worker errors stay bounded: ${errors}`);
    assert.equal(duringOutage.filter((l) => l.level >= 40 && /^Redis unreachable/.test(l.msg)).length, 1, 'one warning');
    assert.ok(duringOutage.length <= 10, `a handful of log lines, not one per error: ${duringOutage.map((l) => l.msg).join(' | ')}`);

    await healBackgroundSave(admin);
    await eventually(() => !t.ctx.dependencies.isDown('redis'), 'the probe saw Redis take writes again');
    assert.equal(log.lines.filter((l) => /^Redis reachable again after \d+s/.test(l.msg)).length, 1, 'one recovery line');
    assert.equal(await redisUp(await t.ctx.metrics.registry.metrics()), '1');
    assert.equal((await readiness(t.ctx)).ready, true);

    // The workers took up their work again.
    const rows = ['id,face_url', `a,"${await faceDataUri(1)}"`, `b,"${await faceDataUri(2)}"`];
    const { runId } = await produceRun(t.ctx, await t.manifest('after.csv', `${rows.join('\n')}\n`));
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.failed], [2, 0]);
  } finally {
    await healBackgroundSave(admin).catch(() => undefined);
    admin.disconnect();
    await t.stop();
  }
});
