// Cron schedules: each tick fires once whatever the number of scheduler processes, a tick whose
// previous run is still running is skipped, a schedule removed from the file stops, and a bad
// schedules file is refused before anything is connected to. Every-second patterns keep it short.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { resolveManifest, TRIGGERS_QUEUE, tickRunId } from '../src/triggers/cron.ts';
import { ManifestError } from '../src/manifest/index.ts';
import { triggerKeys } from '../src/triggers/keys.ts';
import { startScheduler } from '../src/triggers/scheduler.ts';
import type { Schedule } from '../src/triggers/schedulesFile.ts';
import { faceDataUri } from './helpers/faces.ts';
import { count, runCli, startCli, type CliProcess } from './helpers/processes.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';
import { until } from './security/helpers.ts';

let t: TestStack;
let manifestUrl: string;
const running: CliProcess[] = [];

before(async () => {
  // No workers at first: a run of the overlap test stays running. They are started for the later tests.
  t = await startTestStack({ workers: false });
  await t.ctx.storage.upload('nightly/one.csv', `id,face_url\nr0,"${await faceDataUri(1)}"\n`, 'text/csv');
  manifestUrl = `s3://${t.ctx.storage.bucket}/nightly/one.csv`;
});

after(async () => {
  await Promise.all(running.map((p) => p.stop('SIGKILL')));
  await t.stop();
});

interface TickEntry {
  tick: number;
  outcome: 'fired' | 'skipped' | 'failed';
  runId: string;
}

async function ticks(name: string): Promise<TickEntry[]> {
  return (await t.ctx.redis.lrange(triggerKeys.scheduleTicks(name), 0, -1)).map((e) => JSON.parse(e) as TickEntry).reverse();
}

const everySecond = (name: string, manifest = manifestUrl): Schedule => ({ name, cron: '* * * * * *', timezone: 'UTC', manifest, options: {} });

async function schedulesFile(name: string, schedules: unknown[]): Promise<string> {
  const path = join(t.dir, name);
  await writeFile(path, JSON.stringify({ schedules }));
  return path;
}

test('a tick whose previous run of the schedule is still running is skipped, and schedules --json shows it', async () => {
  const sched = await startScheduler(t.pb, { schedules: [everySecond('slow')], dropFolder: false });
  try {
    await until(async () => (await ticks('slow')).filter((e) => e.outcome === 'skipped').length >= 2, 'two skipped ticks', 20_000);
  } finally {
    await sched.close();
  }
  const seen = await ticks('slow');
  const fired = seen.filter((e) => e.outcome === 'fired');
  assert.equal(fired.length, 1, `one tick fired: ${JSON.stringify(seen)}`);
  assert.ok(seen.slice(1).every((e) => e.outcome === 'skipped' && e.runId === fired[0]!.runId), 'the later ticks were skipped for the running run');
  const runs = (await t.pb.listRuns()).filter((r) => r.runId.startsWith('slow-'));
  assert.deepEqual(runs.map((r) => r.runId), [fired[0]!.runId]);

  const file = await schedulesFile('slow.json', [everySecond('slow')]);
  const res = await runCli(['schedules', '--json'], { ...t.local.env, SCHEDULES_FILE: file });
  assert.equal(res.code, 0, res.stderr);
  const listed = (JSON.parse(res.stdout) as { schedules: { name: string; next: string; lastRun: { runId: string; state: string }; skipped: number }[] }).schedules;
  assert.equal(listed.length, 1);
  assert.equal(listed[0]!.name, 'slow');
  assert.ok(!Number.isNaN(Date.parse(listed[0]!.next)), 'a next fire time');
  assert.deepEqual([listed[0]!.lastRun.runId, listed[0]!.lastRun.state], [fired[0]!.runId, 'running']);
  assert.ok(listed[0]!.skipped >= 2);
  await t.pb.cancelRun(fired[0]!.runId);
});

test('a cron schedule fires once per tick with two scheduler processes running', async () => {
  await t.pb.startWorkers();
  const file = await schedulesFile('each.json', [everySecond('each')]);
  const env = { ...t.local.env, SCHEDULES_FILE: file, LOG_LEVEL: 'info' };
  const a = startCli(['scheduler'], env);
  const b = startCli(['scheduler'], env);
  running.push(a, b);
  await Promise.all([a.waitFor(/scheduler running/), b.waitFor(/scheduler running/)]);
  await until(async () => (await ticks('each')).filter((e) => e.outcome === 'fired').length >= 3, 'three fired ticks', 30_000);
  assert.equal(await a.stop(), 0, 'SIGTERM stops a scheduler gracefully');
  assert.equal(await b.stop(), 0);

  const seen = await ticks('each');
  const tickTimes = seen.map((e) => e.tick);
  assert.equal(new Set(tickTimes).size, tickTimes.length, `no tick handled twice: ${JSON.stringify(seen)}`);
  const fired = seen.filter((e) => e.outcome === 'fired');
  for (const e of fired) assert.equal(e.runId, tickRunId('each', e.tick), 'the run is named after its tick');
  assert.equal(count(a.output() + b.output(), /schedule fired/g), fired.length, 'each fired tick started its run in one process');
  const runs = (await t.pb.listRuns()).filter((r) => r.runId.startsWith('each-'));
  assert.deepEqual(runs.map((r) => r.runId).sort(), fired.map((e) => e.runId).sort());
});

test('a schedule removed from the file is removed and fires no more', async () => {
  let sched = await startScheduler(t.pb, { schedules: [everySecond('kept'), everySecond('dropped')], dropFolder: false });
  try {
    await until(async () => (await ticks('dropped')).length >= 1, 'a tick of the schedule to be removed', 20_000);
  } finally {
    await sched.close();
  }
  sched = await startScheduler(t.pb, { schedules: [everySecond('kept')], dropFolder: false });
  try {
    const queue = new Queue(TRIGGERS_QUEUE, { connection: t.ctx.redis });
    const registered = (await queue.getJobSchedulers(0, -1)).map((s) => s.key);
    await queue.close();
    assert.deepEqual(registered, ['schedule~kept'], 'only the schedule still in the file is registered (each, of the last test, is gone too)');
    const droppedTicks = (await ticks('dropped')).length;
    const keptTicks = (await ticks('kept')).length;
    await until(async () => (await ticks('kept')).length >= keptTicks + 2, 'two more ticks of the kept schedule', 20_000);
    assert.equal((await ticks('dropped')).length, droppedTicks, 'the removed schedule did not tick again');
  } finally {
    await sched.close();
  }
});

test('a bad schedules file is refused at start (scheduler, schedules, demo --keep-alive), before connecting, naming the schedule and the reason (exit 3)', async () => {
  // Nothing listens on port 1: a scheduler that connected first would fail otherwise, or hang.
  const env = { ...t.local.env, REDIS_URL: 'redis://127.0.0.1:1', S3_ENDPOINT: 'http://127.0.0.1:1' };
  const cases: [unknown, RegExp][] = [
    [{ ...everySecond('typo'), cronn: '* * * * *' }, /schedule "typo": .*unknown field "cronn"/],
    [{ ...everySecond('badcron'), cron: '61 * * * *' }, /schedule "badcron": cron "61 \* \* \* \*" is not a valid cron pattern/],
    [{ ...everySecond('badtz'), timezone: 'Mars/Olympus' }, /schedule "badtz": timezone "Mars\/Olympus" is not an IANA time zone/],
  ];
  for (const [i, [schedule, message]] of cases.entries()) {
    const file = await schedulesFile(`bad-${i}.json`, [everySecond('fine'), schedule]);
    for (const args of i === 0 ? [['scheduler'], ['schedules', '--json'], ['demo', '--keep-alive', '--data-dir', join(t.dir, 'demo')]] : [['scheduler']]) {
      const res = await runCli(args, { ...env, SCHEDULES_FILE: file });
      assert.equal(res.code, 3, `${args.join(' ')}: ${res.stderr}`);
      assert.match(res.stderr, message);
      assert.doesNotMatch(res.stderr, /\n\s+at /, 'no stack trace');
    }
  }
});

test('a manifest prefix ending in / takes its newest .csv/.csv.gz; an empty one fails the tick with its reason, and the next tick fires', async () => {
  const bucket = t.ctx.storage.bucket;
  await t.ctx.storage.upload('exports/2026-11-24.csv', 'id,face_url\n', 'text/csv');
  await t.ctx.storage.upload('exports/2026-11-25.csv.gz', 'not read here', 'application/gzip');
  await t.ctx.storage.upload('exports/zz-notes.txt', 'not a manifest', 'text/plain');
  assert.equal(await resolveManifest(t.ctx, `s3://${bucket}/exports/`), `s3://${bucket}/exports/2026-11-25.csv.gz`);
  await assert.rejects(resolveManifest(t.ctx, `s3://${bucket}/nothing-here/`), (err: unknown) => err instanceof ManifestError && /no \.csv or \.csv\.gz manifest under/.test(err.message));

  const sched = await startScheduler(t.pb, { schedules: [everySecond('empty', `s3://${bucket}/nothing-here/`)], dropFolder: false });
  try {
    await until(async () => (await ticks('empty')).filter((e) => e.outcome === 'failed').length >= 2, 'two failed ticks', 20_000);
  } finally {
    await sched.close();
  }
  const failed = (await ticks('empty')).filter((e) => e.outcome === 'failed') as (TickEntry & { reason: string })[];
  assert.match(failed[0]!.reason, /no \.csv or \.csv\.gz manifest under s3:\/\/.*\/nothing-here\//);
  assert.equal((await t.pb.listRuns()).filter((r) => r.runId.startsWith('empty-')).length, 0, 'no run');
});
