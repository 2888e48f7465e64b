// The drop folder at its edges, one poll at a time (pollOnce) on the real stack: an upload replaced
// while the scheduler moves the old one is never deleted (the delete checks the ETag), a claim whose
// start failed for a passing reason is given back at once, a claim is renewed while its run is being
// started (another scheduler does not take it), and where each object goes. An S3 front of the
// test's own sits between the drop folder and s3rver where a test needs to act between two requests.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import { loadConfig } from '../src/core/config.ts';
import { createPortraitBatch, type PortraitBatch } from '../src/index.ts';
import { triggerCommand } from '../src/triggers/commands.ts';
import { dropLayout, dropRunId, startDropFolder, type DropFolderOptions } from '../src/triggers/dropFolder.ts';
import { triggerKeys } from '../src/triggers/keys.ts';
import { faceDataUri } from './helpers/faces.ts';
import { TEST_POLICY, startTestStack, type TestStack } from './helpers/stack.ts';
import { until } from './security/helpers.ts';

let t: TestStack;
let bucket: string;
const handles: PortraitBatch[] = [];

before(async () => {
  t = await startTestStack();
  bucket = t.ctx.storage.bucket;
});

after(async () => {
  for (const h of handles) await h.close();
  await t.stop();
});

async function manifestText(rows: number, seed: number): Promise<string> {
  const lines = ['id,face_url'];
  for (let i = 0; i < rows; i++) lines.push(`r${i},"${await faceDataUri(seed + i)}"`);
  return `${lines.join('\n')}\n`;
}

async function put(key: string, text: string): Promise<string> {
  const res = await t.ctx.storage.client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: text, ContentType: 'text/csv' }));
  return res.ETag!.replace(/"/g, '');
}

async function textOf(key: string): Promise<string | undefined> {
  try {
    return (await (await t.ctx.storage.getStream(key)).toArray()).join('');
  } catch {
    return undefined;
  }
}

async function keysUnder(prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const o of t.ctx.storage.list(prefix)) out.push(o.key);
  return out.sort();
}

/** What the front does with one request: undefined passes it to s3rver. */
type Intercept = (req: IncomingMessage, res: ServerResponse, forward: (after?: () => Promise<void>) => void) => boolean;

/** An S3 front on loopback: passes every request to s3rver unless `intercept` takes it. */
async function s3Front(intercept: Intercept): Promise<{ url: string; close(): Promise<void> }> {
  const target = new URL(t.local.env.S3_ENDPOINT!);
  const server: Server = createServer((req, res) => {
    const forward = (afterUpstream?: () => Promise<void>) => {
      const up = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (upRes) => {
        void (async () => {
          const body = Buffer.concat(await upRes.toArray());
          if (afterUpstream) await afterUpstream();
          res.writeHead(upRes.statusCode ?? 502, upRes.headers).end(body);
        })();
      });
      up.on('error', () => res.destroy());
      req.pipe(up);
    };
    if (!intercept(req, res, forward)) forward();
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

/** A library handle whose S3 is the front (the drop folder's requests pass through it). */
function handleThrough(url: string): PortraitBatch {
  const pb = createPortraitBatch(loadConfig({ ...t.local.env, S3_ENDPOINT: url, LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent' }), { name: 'drop-edges', policy: TEST_POLICY });
  handles.push(pb);
  return pb;
}

const folder = (pb: PortraitBatch, prefix: string, extra: Partial<DropFolderOptions> = {}) => startDropFolder(pb, { prefix, pollMs: 1e9, settleMs: 0, claimMs: 60_000, loop: false, ...extra });

const isCopyOf = (req: IncomingMessage, key: string) => req.method === 'PUT' && decodeURIComponent(String(req.headers['x-amz-copy-source'] ?? '')).endsWith(`${bucket}/${key}`);

test('a bad manifest replaced while it is moved to failed/: the new upload stays and becomes a run', async () => {
  const key = 'replaced-bad/in/team.csv';
  const oldEtag = await put(key, 'name,email\nada,ada@example.com\n');
  const fixed = await manifestText(1, 60);
  let replaced = false;
  const front = await s3Front((req, _res, forward) => {
    if (!isCopyOf(req, key)) return false;
    // The team uploads the fixed file while the copy to failed/ is under way.
    forward(async () => {
      await put(key, fixed);
      replaced = true;
    });
    return true;
  });
  try {
    const drop = folder(handleThrough(front.url), 'replaced-bad/in/');
    try {
      assert.deepEqual(await drop.pollOnce(), { started: [], settled: [], failed: [key] });
      assert.ok(replaced, 'the upload was replaced between the copy and the delete');
      assert.equal(await textOf(key), fixed, 'the new upload is not deleted');
      assert.equal(await textOf('replaced-bad/failed/team.csv'), 'name,email\nada,ada@example.com\n', 'the refused one is in failed/');
      assert.match((await textOf('replaced-bad/failed/team.csv.reason.txt'))!, /face_url/);
      assert.equal(await t.ctx.redis.get(triggerKeys.dropClaim(dropRunId(bucket, key, oldEtag))), null, 'its claim is gone');
    } finally {
      await drop.close();
    }
    // The next poll takes the fixed upload as a run of its own.
    const direct = folder(t.pb, 'replaced-bad/in/');
    try {
      assert.deepEqual((await direct.pollOnce()).started, [key]);
    } finally {
      await direct.close();
    }
  } finally {
    await front.close();
  }
});

test('an upload replaced while its ended run moves it to processed/: the new upload stays and becomes a run', async () => {
  const key = 'replaced-done/in/daily.csv';
  const first = await manifestText(1, 62);
  const runA = dropRunId(bucket, key, await put(key, first));
  const direct = folder(t.pb, 'replaced-done/in/');
  try {
    assert.deepEqual((await direct.pollOnce()).started, [key]);
    assert.equal(await t.ctx.redis.get(triggerKeys.dropClaim(runA)), 'started');
    assert.deepEqual(await direct.pollOnce(), { started: [], settled: [], failed: [] }, 'claimed and running: nothing to do');
    await t.pb.waitForRun(runA, { timeoutMs: 60_000 });
  } finally {
    await direct.close();
  }
  const second = await manifestText(2, 62);
  const front = await s3Front((req, _res, forward) => {
    if (!isCopyOf(req, key)) return false;
    forward(async () => void (await put(key, second)));
    return true;
  });
  try {
    const drop = folder(handleThrough(front.url), 'replaced-done/in/');
    try {
      assert.deepEqual((await drop.pollOnce()).settled, [key]);
    } finally {
      await drop.close();
    }
    assert.equal(await textOf(`replaced-done/processed/${runA}/daily.csv`), first);
    assert.equal(await textOf(key), second, 'the new upload is not deleted');
    assert.equal(await t.ctx.redis.get(triggerKeys.dropClaim(runA)), null);
  } finally {
    await front.close();
  }
});

test('a claim whose run could not be started for a passing reason (S3 failing) is given back at once; the next poll starts it', async () => {
  const key = 'flaky/in/x.csv';
  const runId = dropRunId(bucket, key, await put(key, await manifestText(1, 64)));
  let failing = true;
  let refusedReads = 0;
  const front = await s3Front((req, res) => {
    if (!failing || req.method !== 'GET' || req.url?.split('?')[0] !== `/${bucket}/${key}`) return false;
    refusedReads++;
    req.resume();
    res.writeHead(500, { 'content-type': 'application/xml' }).end('<Error><Code>InternalError</Code><Message>try again</Message></Error>');
    return true;
  });
  try {
    // A lease of a minute: without the release the next poll would have to wait that long.
    const drop = folder(handleThrough(front.url), 'flaky/in/');
    try {
      assert.deepEqual(await drop.pollOnce(), { started: [], settled: [], failed: [] });
      assert.ok(refusedReads > 0, 'the manifest read failed');
      assert.equal(await t.ctx.redis.get(triggerKeys.dropClaim(runId)), null, 'the claim was given back');
      assert.deepEqual(await keysUnder('flaky/'), [key], 'not moved to failed/: it is not the manifest that is wrong');
      failing = false;
      assert.deepEqual((await drop.pollOnce()).started, [key]);
      assert.equal(await t.ctx.redis.get(triggerKeys.dropClaim(runId)), 'started');
    } finally {
      await drop.close();
    }
  } finally {
    await front.close();
  }
  await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
});

test("a claim is renewed while its run is being started: another scheduler does not take it past the lease", async () => {
  const key = 'slow/in/y.csv';
  const runId = dropRunId(bucket, key, await put(key, await manifestText(1, 66)));
  const held: ServerResponse[] = [];
  let onHeld!: () => void;
  const reading = new Promise<void>((r) => (onHeld = r));
  const front = await s3Front((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== `/${bucket}/${key}`) return false;
    held.push(res);
    onHeld();
    return true;
  });
  // Renewed every third of it: a loaded machine's late timer still renews in time.
  const CLAIM_MS = 1500;
  const slow = folder(handleThrough(front.url), 'slow/in/', { claimMs: CLAIM_MS });
  const other = folder(t.pb, 'slow/in/', { claimMs: CLAIM_MS });
  try {
    const polling = slow.pollOnce();
    await reading;
    const token = await t.ctx.redis.get(triggerKeys.dropClaim(runId));
    assert.ok(token && token !== 'started', `claimed (${token})`);
    // Three leases long, the claim must stay the slow scheduler's at every look.
    const since = Date.now();
    await until(
      async () => {
        const now = await t.ctx.redis.get(triggerKeys.dropClaim(runId));
        assert.equal(now, token, `the claim was lost ${Date.now() - since} ms after it was taken`);
        return Date.now() - since > 3 * CLAIM_MS;
      },
      'three leases',
      30_000,
    );
    assert.deepEqual(await other.pollOnce(), { started: [], settled: [], failed: [] }, 'the other scheduler leaves it');
    assert.equal(await t.pb.status(runId), undefined, 'no run started by the other');
    // The renewal is a script that only its holder passes.
    assert.equal(await triggerCommand(t.ctx.redis, 'renewClaim', [triggerKeys.dropClaim(runId)], ['someone-else', 60_000]), 'lost');
    assert.equal(await triggerCommand(t.ctx.redis, 'releaseClaim', [triggerKeys.dropClaim(runId)], ['someone-else']), 'lost');
    assert.equal(await t.ctx.redis.get(triggerKeys.dropClaim(runId)), token);

    for (const r of held) r.destroy();
    await front.close();
    // The held read fails (a passing reason): the claim is given back, and the other starts the run.
    assert.deepEqual((await polling).started, []);
    assert.equal(await t.ctx.redis.get(triggerKeys.dropClaim(runId)), null);
    assert.deepEqual((await other.pollOnce()).started, [key]);
  } finally {
    for (const r of held) r.destroy();
    await slow.close();
    await other.close();
    await front.close().catch(() => undefined);
  }
  await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
});

test('renewClaim and releaseClaim: the holder renews its lease and gives it back', async () => {
  const claim = triggerKeys.dropClaim('scripts-run');
  await t.ctx.redis.set(claim, 'me', 'PX', 1000);
  assert.equal(await triggerCommand(t.ctx.redis, 'renewClaim', [claim], ['me', 60_000]), 'ok');
  const ttl = await t.ctx.redis.pttl(claim);
  assert.ok(ttl > 50_000 && ttl <= 60_000, `lease renewed to a minute (${ttl} ms)`);
  assert.equal(await triggerCommand(t.ctx.redis, 'releaseClaim', [claim], ['me']), 'ok');
  assert.equal(await t.ctx.redis.exists(claim), 0);
  assert.equal(await triggerCommand(t.ctx.redis, 'renewClaim', [claim], ['me', 60_000]), 'lost', 'nothing to renew');
  assert.equal(await t.ctx.redis.exists(claim), 0, 'a lost renewal creates nothing');
});

test("an upload is taken once exactly DROP_SETTLE_MS old (on the test's clock); other files and folder markers are left alone", async () => {
  const key = 'edge/in/a.csv';
  const runId = dropRunId(bucket, key, await put(key, await manifestText(1, 68)));
  await t.ctx.storage.upload('edge/in/notes.txt', 'not a manifest', 'text/plain');
  await t.ctx.storage.upload('edge/in/sub/', '', 'application/x-directory');
  let listedAt = 0;
  for await (const o of t.ctx.storage.list('edge/in/')) if (o.key === key) listedAt = o.lastModified;
  let clock = listedAt + 9_999;
  const drop = folder(t.pb, 'edge/in/', { settleMs: 10_000, now: () => clock });
  try {
    assert.deepEqual(await drop.pollOnce(), { started: [], settled: [], failed: [] }, 'one millisecond short');
    assert.equal(await t.ctx.redis.get(triggerKeys.dropClaim(runId)), null);
    clock = listedAt + 10_000;
    assert.deepEqual(await drop.pollOnce(), { started: [key], settled: [], failed: [] }, 'settled at exactly the settle time');
    await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.deepEqual(await drop.pollOnce(), { started: [], settled: [key], failed: [] });
  } finally {
    await drop.close();
  }
  assert.deepEqual(await keysUnder('edge/'), [`edge/in/notes.txt`, 'edge/in/sub/', `edge/processed/${runId}/a.csv`]);
});

test('where objects go, and run ids of uploads', () => {
  const l = dropLayout('teams/a/incoming/');
  assert.equal(l.processed('run-1', 'teams/a/incoming/x.csv'), 'teams/a/processed/run-1/x.csv');
  assert.equal(l.processed('run-1', 'teams/a/incoming/sub/x.csv.gz'), 'teams/a/processed/run-1/sub/x.csv.gz');
  assert.equal(l.failed('teams/a/incoming/sub/x.csv'), 'teams/a/failed/sub/x.csv');
  assert.equal(l.reason('teams/a/incoming/x.csv'), 'teams/a/failed/x.csv.reason.txt');
  assert.equal(dropLayout('incoming/').failed('incoming/x.csv'), 'failed/x.csv');

  const id = dropRunId('b', 'incoming/Faces 2026.csv.gz', 'etag1');
  assert.match(id, /^Faces_2026-[0-9a-f]{16}$/);
  assert.equal(dropRunId('b', 'incoming/Faces 2026.csv.gz', 'etag1'), id, 'the same upload, the same run');
  assert.notEqual(dropRunId('b', 'incoming/Faces 2026.csv.gz', 'etag2'), id, 'other bytes, another run');
  assert.notEqual(dropRunId('c', 'incoming/Faces 2026.csv.gz', 'etag1'), id, 'another bucket, another run');
  assert.notEqual(dropRunId('b', 'other/Faces 2026.csv.gz', 'etag1'), id, 'another key, another run');
  assert.match(dropRunId('b', 'in/x.CSV', 'e'), /^x-[0-9a-f]{16}$/);
  assert.match(dropRunId('b', 'in/__.-x.csv', 'e'), /^x-[0-9a-f]{16}$/, 'leading marks dropped');
  assert.match(dropRunId('b', 'in/é.csv', 'e'), /^drop-[0-9a-f]{16}$/, 'nothing readable left: drop');
  assert.equal(dropRunId('b', `in/${'a'.repeat(100)}.csv`, 'e').split('-')[0]!.length, 80);
  assert.match(dropRunId('b', 'in/a.b_c-d.csv', 'e'), /^a\.b_c-d-[0-9a-f]{16}$/);
});
