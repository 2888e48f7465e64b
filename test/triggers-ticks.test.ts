// Every decision of a cron tick, one at a time, on a real Redis and S3 with the tick's clock in the
// test's hands: fired, fired again (a retried tick job resumes its run), skipped while the previous
// run of the schedule is running (however long ago it fired), failed with its reason (and the next
// tick fires), and which manifest a prefix resolves to. No scheduler timing is involved: the tick jobs
// are handed to processTick as BullMQ would hand them.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { Queue, type Job } from 'bullmq';
import { loadConfig } from '../src/core/config.ts';
import { keys } from '../src/core/keys.ts';
import { createPortraitBatch } from '../src/index.ts';
import { ManifestError } from '../src/manifest/index.ts';
import { triggerCommand } from '../src/triggers/commands.ts';
import { formatSchedules, listSchedules, processTick, resolveManifest, syncSchedules, tickRunId, TRIGGERS_QUEUE, type TickJob } from '../src/triggers/cron.ts';
import { triggerKeys, TICKS_KEPT } from '../src/triggers/keys.ts';
import type { Schedule } from '../src/triggers/schedulesFile.ts';
import { faceDataUri } from './helpers/faces.ts';
import { TEST_POLICY, startTestStack, type TestStack } from './helpers/stack.ts';
import { until } from './security/helpers.ts';

let t: TestStack;
let bucket: string;
/** The test stack's JOB_LOCK_MS is 4 s: a fired run not yet recorded holds the schedule for twice that. */
const GRACE_MS = 8000;
const T0 = Date.UTC(2026, 10, 26, 2, 0, 0);
const MINUTE = 60_000;

before(async () => {
  // No workers: a fired run stays running until a test starts them.
  t = await startTestStack({ workers: false, webhook: false });
  bucket = t.ctx.storage.bucket;
  await t.ctx.storage.upload('ticks/one.csv', `id,face_url\nr0,"${await faceDataUri(2)}"\n`, 'text/csv');
});

after(async () => {
  await t.stop();
});

const schedule = (name: string, manifest = `s3://${bucket}/ticks/one.csv`): Schedule => ({ name, cron: '* * * * *', timezone: 'UTC', manifest, options: {} });

/** The job BullMQ hands the worker for one tick of a job scheduler. */
const tickJob = (s: Schedule, tick: number) => ({ id: `repeat:${s.name}:${tick}`, data: { schedule: s }, opts: { prevMillis: tick }, timestamp: tick }) as unknown as Job<TickJob>;

const tickAt = (s: Schedule, tick: number, now = tick) => processTick(t.pb, tickJob(s, tick), () => now);

interface TickEntry {
  tick: number;
  outcome: string;
  runId: string;
  reason?: string;
}
const ticks = async (name: string) => (await t.ctx.redis.lrange(triggerKeys.scheduleTicks(name), 0, -1)).map((e) => JSON.parse(e) as TickEntry).reverse();
const scheduleHash = (name: string) => t.ctx.redis.hgetall(triggerKeys.schedule(name));

test('a tick fires its run; the same tick run again (a retried job) resumes that run instead of starting another', async () => {
  const s = schedule('fire');
  const first = await tickAt(s, T0);
  assert.deepEqual(first, { outcome: 'fired', runId: tickRunId('fire', T0) });
  assert.equal(first.runId, 'fire-20261126T020000Z');
  const h = await scheduleHash('fire');
  assert.deepEqual([h.runId, h.lastRunId, h.tick, h.firedAt, h.fired], [first.runId, first.runId, String(T0), String(T0), '1']);
  const run = await t.ctx.rows.getRun(first.runId);
  assert.equal(run?.state, 'running');
  assert.deepEqual(run?.options.schedule, 'fire');
  assert.equal(run?.options.tick, T0);

  // Ten minutes later the same tick job runs again (its worker died after firing): the same run.
  const again = await tickAt(s, T0, T0 + 10 * MINUTE);
  assert.deepEqual(again, first);
  assert.deepEqual(await ticks('fire'), [{ tick: T0, outcome: 'fired', runId: first.runId }], 'one fired entry: the repeat is not a new tick');
  assert.equal((await scheduleHash('fire')).fired, '1');
  assert.equal((await t.pb.listRuns()).filter((r) => r.runId.startsWith('fire-')).length, 1, 'one run');
});

test('a tick while the previous run of the schedule is running is skipped, however long ago that run fired', async () => {
  const s = schedule('overlap');
  const first = await tickAt(s, T0);
  assert.equal(first.outcome, 'fired');
  // The next tick a minute later, and one a day later: the run (never worked on) still runs.
  for (const [i, tick] of [T0 + MINUTE, T0 + 1440 * MINUTE].entries()) {
    const res = await tickAt(s, tick);
    assert.deepEqual(res, { outcome: 'skipped', running: first.runId }, `tick ${i + 1}`);
    const h = await scheduleHash('overlap');
    assert.deepEqual([h.skipped, h.lastSkippedTick, h.runId], [String(i + 1), String(tick), first.runId]);
  }
  assert.deepEqual(
    (await ticks('overlap')).map((e) => [e.outcome, e.runId]),
    [
      ['fired', first.runId],
      ['skipped', first.runId],
      ['skipped', first.runId],
    ],
  );
  assert.deepEqual((await t.pb.listRuns()).filter((r) => r.runId.startsWith('overlap-')).map((r) => r.runId), [first.runId], 'never two runs of one schedule at once');

  const [listed] = await listSchedules(t.ctx, [s]);
  assert.equal(listed!.skipped, 2);
  assert.equal(listed!.lastSkippedAt, new Date(T0 + 1440 * MINUTE).toISOString());
  assert.deepEqual([listed!.lastRun?.runId, listed!.lastRun?.state, listed!.lastRun?.finishedAt], [first.runId, 'running', null]);
  assert.equal(listed!.registered, false, 'no scheduler registered it');
  assert.match(formatSchedules([listed!]), /^overlap {2}\* \* \* \* \* \(UTC\) {2}s3:\/\/.*\/ticks\/one\.csv {2}next \S+ {2}last run overlap-20261126T020000Z \(running\) {2}· 2 ticks skipped · not registered$/);
});

test('a fired run not recorded yet holds the schedule for the grace period only (its scheduler may have died before starting it)', async () => {
  const s = schedule('grace');
  const ghost = tickRunId('grace', T0);
  // The state a scheduler leaves when it died between firing the tick and creating the run.
  await t.ctx.redis.hset(triggerKeys.schedule('grace'), { runId: ghost, tick: T0, firedAt: T0 });
  assert.deepEqual(await tickAt(s, T0 + MINUTE, T0 + GRACE_MS - 1), { outcome: 'skipped', running: ghost }, 'within the grace the run may still be being started');
  const later = await tickAt(s, T0 + 2 * MINUTE, T0 + GRACE_MS + 1);
  assert.deepEqual(later, { outcome: 'fired', runId: tickRunId('grace', T0 + 2 * MINUTE) }, 'past it the tick fires');
});

test("once the previous run has ended the next tick fires; the listing shows the last run's counts", async () => {
  const s = schedule('ended');
  const first = await tickAt(s, T0);
  assert.ok(first.outcome === 'fired');
  await t.pb.startWorkers();
  assert.equal((await t.pb.waitForRun(first.runId, { timeoutMs: 60_000 })).state, 'finished');
  const run = (await t.ctx.rows.getRun(first.runId))!;
  const [listed] = await listSchedules(t.ctx, [s]);
  assert.deepEqual(listed!.lastRun, {
    runId: first.runId,
    state: 'finished',
    startedAt: new Date(run.createdAt).toISOString(),
    finishedAt: new Date(run.finishedAt!).toISOString(),
    completed: 1,
    failed: 0,
    rejected: 0,
    canceled: 0,
  });
  assert.deepEqual(await tickAt(s, T0 + MINUTE, T0 + MINUTE), { outcome: 'fired', runId: tickRunId('ended', T0 + MINUTE) }, 'fired at once, not held by a grace');
  assert.equal((await scheduleHash('ended')).fired, '2');
  await t.pb.waitForRun(tickRunId('ended', T0 + MINUTE), { timeoutMs: 60_000 });
});

test('a tick whose manifest cannot be read fails with the reason, frees the schedule (the next tick tries again) and is not retried', async () => {
  const s = schedule('broken', `s3://${bucket}/ticks-missing/`);
  const failed = await tickAt(s, T0);
  assert.equal(failed.outcome, 'failed');
  assert.match((failed as { reason: string }).reason, /^no \.csv or \.csv\.gz manifest under s3:\/\/portrait-test\/ticks-missing\/$/);
  let h = await scheduleHash('broken');
  assert.deepEqual([h.runId, h.lastError, h.lastErrorAt], ['', (failed as { reason: string }).reason, String(T0)]);
  // A second later, well within the grace: not skipped for a run that never existed.
  const next = await tickAt(s, T0 + MINUTE, T0 + 1000);
  assert.equal(next.outcome, 'failed', JSON.stringify(next));
  assert.deepEqual(
    (await ticks('broken')).map((e) => [e.outcome, e.runId, e.tick]),
    [
      ['fired', tickRunId('broken', T0), T0],
      ['failed', tickRunId('broken', T0), T0],
      ['fired', tickRunId('broken', T0 + MINUTE), T0 + MINUTE],
      ['failed', tickRunId('broken', T0 + MINUTE), T0 + MINUTE],
    ],
  );
  assert.equal((await ticks('broken'))[1]!.reason, (failed as { reason: string }).reason);

  // A manifest that exists but is not one fails the same way (its reason from the reader).
  await t.ctx.storage.upload('ticks-bad/x.csv', 'name\nada\n', 'text/csv');
  const bad = await tickAt(schedule('broken', `s3://${bucket}/ticks-bad/`), T0 + 2 * MINUTE);
  assert.equal(bad.outcome, 'failed');
  assert.match((bad as { reason: string }).reason, /face_url/);

  // Once fixed, the next tick fires.
  await t.ctx.storage.upload('ticks-missing/fixed.csv', `id,face_url\nr0,"${await faceDataUri(5)}"\n`, 'text/csv');
  const fixed = await tickAt(s, T0 + 3 * MINUTE);
  assert.deepEqual(fixed, { outcome: 'fired', runId: tickRunId('broken', T0 + 3 * MINUTE) });
  h = await scheduleHash('broken');
  assert.equal(h.runId, fixed.runId);
  const [listed] = await listSchedules(t.ctx, [s]);
  assert.equal(listed!.lastError, (bad as { reason: string }).reason, 'the last error stays listed');
  await t.pb.waitForRun(fixed.runId, { timeoutMs: 60_000 });
});

test('a tick whose S3 fails is thrown (its job is tried again), keeps the schedule, and the retried job fires the same run', async () => {
  const s = schedule('s3down', `s3://${bucket}/ticks/`);
  // An S3 that answers 500 to everything, on loopback.
  const down = createServer((req, res) => {
    req.resume();
    res.writeHead(500, { 'content-type': 'application/xml' }).end('<Error><Code>InternalError</Code><Message>down</Message></Error>');
  });
  down.listen(0, '127.0.0.1');
  await once(down, 'listening');
  const pb = createPortraitBatch(loadConfig({ ...t.local.env, S3_ENDPOINT: `http://127.0.0.1:${(down.address() as AddressInfo).port}` }), { name: 's3down', policy: TEST_POLICY });
  try {
    await assert.rejects(processTick(pb, tickJob(s, T0), () => T0), (err: Error) => !(err instanceof ManifestError), 'not a bad manifest: the job fails and BullMQ tries it again');
  } finally {
    await pb.close();
    down.closeAllConnections();
    await new Promise((r) => down.close(r));
  }
  const h = await scheduleHash('s3down');
  assert.deepEqual([h.runId, h.lastError], [tickRunId('s3down', T0), undefined], 'the schedule still holds the tick: no other tick fires meanwhile');
  assert.deepEqual((await ticks('s3down')).map((e) => e.outcome), ['fired']);
  assert.deepEqual(await tickAt(s, T0 + MINUTE, T0 + 1000), { outcome: 'skipped', running: tickRunId('s3down', T0) });
  // The retried job, S3 back: the same run.
  assert.deepEqual(await tickAt(s, T0, T0 + 2000), { outcome: 'fired', runId: tickRunId('s3down', T0) });
  assert.equal((await t.ctx.rows.getRun(tickRunId('s3down', T0)))?.manifest, `s3://${bucket}/ticks/one.csv`);
});

test('the tick scripts: a stale read is refused, a late failure of an older tick changes nothing, the tick list is capped', async () => {
  const hash = triggerKeys.schedule('scripts');
  const list = triggerKeys.scheduleTicks('scripts');
  await t.ctx.redis.hset(hash, { runId: 'scripts-a', firedAt: T0 });
  // The caller read another previous run than the one there now.
  assert.equal(await triggerCommand(t.ctx.redis, 'fireTick', [hash, keys.run('scripts-b'), list], ['scripts-b', 'scripts-c', T0, T0, GRACE_MS, TICKS_KEPT]), 'stale');
  assert.equal(await triggerCommand(t.ctx.redis, 'fireTick', [hash, keys.run(''), list], ['', 'scripts-c', T0, T0, GRACE_MS, TICKS_KEPT]), 'stale');
  // A tick that failed after another fired: the other keeps the schedule.
  assert.equal(await triggerCommand(t.ctx.redis, 'failTick', [hash, list], ['scripts-old', T0, 'late', T0, TICKS_KEPT]), 'noop');
  assert.deepEqual(await t.ctx.redis.hgetall(hash), { runId: 'scripts-a', firedAt: String(T0) }, 'nothing written');
  assert.equal(await t.ctx.redis.llen(list), 0);

  for (let i = 0; i < TICKS_KEPT + 5; i++) {
    await t.ctx.redis.hset(hash, 'runId', `scripts-${i}`);
    assert.equal(await triggerCommand(t.ctx.redis, 'failTick', [hash, list], [`scripts-${i}`, T0 + i, 'why', T0, TICKS_KEPT]), 'ok');
  }
  assert.equal(await t.ctx.redis.llen(list), TICKS_KEPT, `the newest ${TICKS_KEPT} kept`);
  assert.equal((JSON.parse((await t.ctx.redis.lindex(list, 0))!) as TickEntry).tick, T0 + TICKS_KEPT + 4, 'newest first');
  for (let i = 0; i < TICKS_KEPT + 5; i++) {
    await t.ctx.redis.hset(hash, 'runId', '');
    assert.equal(await triggerCommand(t.ctx.redis, 'fireTick', [hash, keys.run(''), list], ['', `scripts-f${i}`, T0 + i, T0, GRACE_MS, TICKS_KEPT]), 'fire');
  }
  assert.equal(await t.ctx.redis.llen(list), TICKS_KEPT);
});

test('tick run ids: the tick in UTC to the second, milliseconds only when there are some', () => {
  assert.equal(tickRunId('n', Date.UTC(2026, 0, 2, 3, 4, 5)), 'n-20260102T030405Z');
  assert.equal(tickRunId('n', Date.UTC(2026, 0, 2, 3, 4, 5, 67)), 'n-20260102T030405.067Z');
});

test('a manifest prefix takes its newest .csv or .csv.gz by Last-Modified, whatever the names; equal times take the last name', async () => {
  // Uploaded first under a name that sorts last, then a newer one under a name that sorts first.
  await t.ctx.storage.upload('newest/zz-old.csv', 'id,face_url\n', 'text/csv');
  const listed = async () => {
    const out = new Map<string, number>();
    for await (const o of t.ctx.storage.list('newest/')) out.set(o.key, o.lastModified);
    return out;
  };
  const oldAt = (await listed()).get('newest/zz-old.csv')!;
  // S3 times have a one-second grain: upload again until the newer one is seen later.
  await until(
    async () => {
      await t.ctx.storage.upload('newest/aa-new.CSV.GZ', 'newer', 'application/gzip');
      return (await listed()).get('newest/aa-new.CSV.GZ')! > oldAt;
    },
    'an upload with a later Last-Modified',
    10_000,
  );
  await t.ctx.storage.upload('newest/zzz-later.csv.txt', 'not a manifest', 'text/plain');
  await t.ctx.storage.upload('newest/zzzz.csvx', 'not a manifest', 'text/plain');
  assert.equal(await resolveManifest(t.ctx, `s3://${bucket}/newest/`), `s3://${bucket}/newest/aa-new.CSV.GZ`);
  assert.equal(await resolveManifest(t.ctx, `s3://${bucket}/newest/zz-old.csv`), `s3://${bucket}/newest/zz-old.csv`, 'a key is taken as it is');

  // Same second: the name that sorts last (uploaded again until the three share their second).
  await until(
    async () => {
      for (const k of ['b', 'a', 'c']) await t.ctx.storage.upload(`same/${k}.csv`, 'x', 'text/csv');
      const times = new Set<number>();
      for await (const o of t.ctx.storage.list('same/')) times.add(o.lastModified);
      return times.size === 1;
    },
    'three uploads within one second',
    10_000,
  );
  assert.equal(await resolveManifest(t.ctx, `s3://${bucket}/same/`), `s3://${bucket}/same/c.csv`);

  await assert.rejects(resolveManifest(t.ctx, `s3://no-such-bucket-pb/any/`), (err: unknown) => err instanceof ManifestError && /^cannot list s3:\/\/no-such-bucket-pb\/any\/: NoSuchBucket$/.test(err.message));
});

test('registering schedules: each becomes a job scheduler; one no longer in the file is removed, other schedulers are left alone; the listing without a file shows the registered ones', async () => {
  const queue = new Queue<TickJob>(TRIGGERS_QUEUE, { connection: t.ctx.redis });
  // New Year only: no tick comes during the test (and no scheduler process runs here).
  const yearly = (name: string, tz = 'UTC'): Schedule => ({ ...schedule(name), cron: '0 0 1 1 *', timezone: tz, options: { maxCost: 5 } });
  try {
    await queue.upsertJobScheduler('not-a-schedule', { pattern: '0 0 1 1 *' }, { name: 'other' });
    await syncSchedules(queue, [yearly('reg-a', 'Europe/Paris'), yearly('reg-b')], t.ctx);
    const registered = async () => (await queue.getJobSchedulers(0, -1)).map((j) => j.key).sort();
    assert.deepEqual(await registered(), ['not-a-schedule', 'schedule~reg-a', 'schedule~reg-b']);
    const a = (await queue.getJobScheduler('schedule~reg-a'))!;
    assert.deepEqual([a.pattern, a.tz, a.template?.data?.schedule.name], ['0 0 1 1 *', 'Europe/Paris', 'reg-a']);

    const listed = await listSchedules(t.ctx);
    assert.deepEqual(listed.map((l) => [l.name, l.registered, l.cron, l.timezone, l.options.maxCost]).sort(), [
      ['reg-a', true, '0 0 1 1 *', 'Europe/Paris', 5],
      ['reg-b', true, '0 0 1 1 *', 'UTC', 5],
    ]);
    const b = listed.find((l) => l.name === 'reg-b')!;
    assert.equal(b.next, new Date((await queue.getJobScheduler('schedule~reg-b'))!.next!).toISOString(), 'the next tick as BullMQ has it');
    assert.match(b.next!, /^\d{4}-01-01T00:00:00\.000Z$/);
    assert.deepEqual([b.lastRun, b.skipped, b.lastSkippedAt, b.lastError], [null, 0, null, null]);
    assert.match(formatSchedules([b]), /^reg-b {2}0 0 1 1 \* \(UTC\) {2}s3:\/\/\S+ {2}next \d{4}-01-01T00:00:00\.000Z {2}no run yet$/);

    await syncSchedules(queue, [yearly('reg-a', 'Europe/Paris')], t.ctx);
    assert.deepEqual(await registered(), ['not-a-schedule', 'schedule~reg-a'], 'reg-b is removed, the other scheduler is not ours to remove');
    assert.deepEqual((await listSchedules(t.ctx)).map((l) => l.name), ['reg-a']);
    await syncSchedules(queue, [], t.ctx);
    assert.deepEqual(await registered(), ['not-a-schedule']);
  } finally {
    await queue.removeJobScheduler('not-a-schedule');
    await queue.close();
  }
});

test('listing: a schedule from the file not registered yet has its next time from its pattern; errors and skips are shown; nothing listed says so', async () => {
  const s = { ...schedule('listed'), cron: '0 0 1 1 *' };
  await t.ctx.redis.hset(triggerKeys.schedule('listed'), { lastError: 'no .csv here', skipped: 3, lastSkippedTick: T0 });
  const [l] = await listSchedules(t.ctx, [s]);
  assert.deepEqual([l!.registered, l!.lastError, l!.skipped, l!.lastSkippedAt], [false, 'no .csv here', 3, new Date(T0).toISOString()]);
  assert.match(l!.next!, /^\d{4}-01-01T00:00:00\.000Z$/);
  assert.match(formatSchedules([l!]), / {2}no run yet {2}· 3 ticks skipped · last error: no \.csv here · not registered$/);
  assert.equal(formatSchedules([]), 'no schedules');
  assert.equal(formatSchedules([l!, l!]).split('\n').length, 2, 'one line each');
});

test('a tick job without prevMillis takes its tick from its id', async () => {
  const s = schedule('by-id');
  const job = { id: `repeat:by-id:${T0 + 5}`, data: { schedule: s }, opts: {}, timestamp: 1 } as unknown as Job<TickJob>;
  assert.deepEqual(await processTick(t.pb, job, () => T0), { outcome: 'fired', runId: tickRunId('by-id', T0 + 5) });
});
