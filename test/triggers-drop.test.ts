// The S3 drop folder: each upload under DROP_PREFIX is one run, claimed once whatever the number of
// scheduler processes, never run twice for the same bytes, and moved out when its run ends (or to
// failed/ with its reason when it cannot be a run). Schedulers are real processes where it matters.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import type { ListedObject } from '../src/core/s3.ts';
import { dropRunId, startDropFolder } from '../src/triggers/dropFolder.ts';
import { triggerKeys } from '../src/triggers/keys.ts';
import { startScheduler, type RunningScheduler } from '../src/triggers/scheduler.ts';
import { faceDataUri } from './helpers/faces.ts';
import { count, startCli, type CliProcess } from './helpers/processes.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';
import { until } from './security/helpers.ts';

let t: TestStack;
const running: CliProcess[] = [];
const DROP_ENV = { DROP_POLL_MS: '100', DROP_SETTLE_MS: '0' };

before(async () => {
  t = await startTestStack({ env: DROP_ENV });
});

after(async () => {
  await Promise.all(running.map((p) => p.stop('SIGKILL')));
  await t.stop();
});

async function manifestText(rows: number, seed = 0): Promise<string> {
  const lines = ['id,face_url'];
  for (let i = 0; i < rows; i++) lines.push(`r${i},"${await faceDataUri(seed + i)}"`);
  return `${lines.join('\n')}\n`;
}

/** Uploads into the drop folder; returns the run id of that upload (a scheduler may move it at once). */
async function drop(key: string, text: string): Promise<string> {
  const put = await t.ctx.storage.client.send(new PutObjectCommand({ Bucket: t.ctx.storage.bucket, Key: key, Body: text, ContentType: 'text/csv' }));
  return dropRunId(t.ctx.storage.bucket, key, put.ETag!.replace(/"/g, ''));
}

async function keysUnder(prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of t.ctx.storage.list(prefix)) out.push(o.key);
  return out.sort();
}

const exists = async (key: string) => (await keysUnder(key)).includes(key);

function scheduler(env: Record<string, string> = {}): CliProcess {
  const p = startCli(['scheduler'], { ...t.local.env, ...DROP_ENV, LOG_LEVEL: 'info', ...env });
  running.push(p);
  return p;
}

test('two scheduler processes racing on one dropped file start one run, and it moves to processed/<runId>/ when it ends', async () => {
  const a = scheduler({ DROP_POLL_MS: '20' });
  const b = scheduler({ DROP_POLL_MS: '20' });
  await Promise.all([a.waitFor(/scheduler running/), b.waitFor(/scheduler running/)]);
  const submitsBefore = t.local.emulator!.stats().submits;

  try {
    const runId = await drop('incoming/race.csv', await manifestText(3));
    await until(async () => (await exists(`processed/${runId}/race.csv`)) && !(await exists('incoming/race.csv')), 'the upload to move to processed/', 60_000).catch(
      (err: Error) => {
        throw new Error(`${err.message}; the schedulers said:\n${a.output()}\n---\n${b.output()}`);
      },
    );

    const claims = count(a.output() + b.output(), /dropped manifest claimed: run started/g);
    assert.equal(claims, 1, `one claim between the two schedulers:\n${a.output()}\n${b.output()}`);
    const run = await t.pb.status(runId);
    assert.equal(run?.state, 'finished');
    assert.equal(run?.completed, 3);
    assert.equal(t.local.emulator!.stats().submits - submitsBefore, 3, 'each row submitted once');
    assert.equal((await t.pb.listRuns()).filter((r) => r.runId === runId).length, 1);
    assert.equal(await a.stop(), 0, 'SIGTERM stops a scheduler gracefully');
    assert.equal(await b.stop(), 0);
  } finally {
    // A failed assertion must not leave them polling the folder the next tests drop into.
    await Promise.all([a.stop('SIGKILL'), b.stop('SIGKILL')]);
  }
});

test('re-uploading identical bytes does not run again; changed bytes under the same key are a new run', async () => {
  const sched: RunningScheduler = await startScheduler(t.pb, {});
  try {
    const first = await manifestText(2, 10);
    const runA = await drop('incoming/same.csv', first);
    // Moved out means copied and the source deleted: the re-upload below must not race that delete.
    await until(async () => (await exists(`processed/${runA}/same.csv`)) && !(await exists('incoming/same.csv')), 'the first upload to be processed', 60_000);
    const runsAfterFirst = (await t.pb.listRuns()).length;
    const submits = t.local.emulator!.stats().submits;

    assert.equal(await drop('incoming/same.csv', first), runA, 'identical bytes: the same run id');
    await until(async () => !(await exists('incoming/same.csv')), 'the identical re-upload to be moved out', 30_000);
    assert.equal((await t.pb.listRuns()).length, runsAfterFirst, 'no new run');
    assert.equal(t.local.emulator!.stats().submits, submits, 'nothing submitted again');

    const runB = await drop('incoming/same.csv', await manifestText(3, 10));
    assert.notEqual(runB, runA);
    await until(() => exists(`processed/${runB}/same.csv`), 'the changed upload to be processed', 60_000);
    assert.equal((await t.pb.listRuns()).length, runsAfterFirst + 1, 'one new run');
    assert.equal((await t.pb.status(runB))?.completed, 3);
  } finally {
    await sched.close();
  }
});

test('a bad manifest lands in failed/ with its reason; other files are left alone', async () => {
  const sched = await startScheduler(t.pb, {});
  try {
    const runsBefore = (await t.pb.listRuns()).length;
    await t.ctx.storage.upload('incoming/notes.txt', 'not a manifest', 'text/plain');
    await drop('incoming/bad.csv', 'name,email\nada,ada@example.com\n');
    await until(() => exists('failed/bad.csv.reason.txt'), 'the reason to be written', 30_000);
    await until(async () => !(await exists('incoming/bad.csv')), 'the bad manifest to leave the drop folder', 30_000);

    assert.ok(await exists('failed/bad.csv'), 'the manifest itself is kept in failed/');
    const reason = (await (await t.ctx.storage.getStream('failed/bad.csv.reason.txt')).toArray()).join('');
    assert.match(reason, /face_url/, 'the reason names what is missing');
    assert.equal((await t.pb.listRuns()).length, runsBefore, 'no run was made of it');
    assert.ok(await exists('incoming/notes.txt'), 'a file that is not a manifest stays where it is');
  } finally {
    await sched.close();
    await t.ctx.storage.remove('incoming/notes.txt');
  }
});

test('an upload younger than the settle time waits (by its Last-Modified, on a clock the test moves)', async () => {
  const runId = await drop('settling/young.csv', await manifestText(1, 30));
  let listed: ListedObject | undefined;
  for await (const o of t.ctx.storage.list('settling/')) listed = o;
  let now = listed!.lastModified + 1000;
  const folder = startDropFolder(t.pb, { prefix: 'settling/', pollMs: 1e9, settleMs: 60_000, claimMs: 5000, now: () => now });
  try {
    assert.deepEqual((await folder.pollOnce()).started, [], 'one second old: it waits');
    assert.equal(await t.ctx.redis.get(triggerKeys.dropClaim(runId)), null, 'not even claimed');
    now = listed!.lastModified + 61_000;
    assert.deepEqual((await folder.pollOnce()).started, ['settling/young.csv'], 'settled: its run starts');
  } finally {
    await folder.close();
  }
  await until(async () => (await folder.pollOnce()).settled.length === 1, 'its run to end and the upload to move', 60_000);
  assert.ok(await exists(`processed/${runId}/young.csv`));
});

/** An S3 front that passes everything to s3rver except reads of one object, which it holds unanswered. */
async function stallingS3(target: URL, stallPath: string): Promise<{ url: string; stalled: Promise<void>; close(): Promise<void> }> {
  let onStall!: () => void;
  const stalled = new Promise<void>((r) => (onStall = r));
  const held: ServerResponse[] = [];
  const server: Server = createServer((req, res) => {
    if (req.method === 'GET' && req.url?.split('?')[0] === stallPath) {
      held.push(res);
      onStall();
      return;
    }
    const up = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      upRes.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    stalled,
    async close() {
      for (const r of held) r.destroy();
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

test('a scheduler SIGKILLed mid-claim and restarted neither loses nor doubles the run', async () => {
  const key = 'incoming/killed.csv';
  const proxy = await stallingS3(new URL(t.local.env.S3_ENDPOINT!), `/${t.ctx.storage.bucket}/${key}`);
  try {
    // JOB_LOCK_MS is the claim's lease: a dead claimer's claim lapses this long after its last renewal.
    const first = scheduler({ S3_ENDPOINT: proxy.url, JOB_LOCK_MS: '1500' });
    await first.waitFor(/scheduler running/);
    const submitsBefore = t.local.emulator!.stats().submits;
    const runId = await drop(key, await manifestText(2, 20));

    await proxy.stalled; // the first scheduler claimed the upload and is reading it to start its run
    const claim = await t.ctx.redis.get(triggerKeys.dropClaim(runId));
    assert.ok(claim && claim !== 'started', `claimed, not started (claim ${claim})`);
    assert.equal(await first.stop('SIGKILL'), null);
    assert.equal(await t.pb.status(runId), undefined, 'no run yet');

    const restarted = scheduler({ JOB_LOCK_MS: '1500' });
    await until(() => exists(`processed/${runId}/${'killed.csv'}`), 'the run of the killed claim to end', 60_000);
    assert.equal(count(restarted.output(), /dropped manifest claimed: run started/g), 1);
    const run = await t.pb.status(runId);
    assert.equal(run?.completed, 2);
    assert.equal(t.local.emulator!.stats().submits - submitsBefore, 2, 'each row submitted once');
    assert.equal(await restarted.stop(), 0);
  } finally {
    await proxy.close();
  }
});
