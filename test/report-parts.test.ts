// The report is built from the outcome lines written in batches as rows finish, not from one
// metadata read per row; a batch that never reached S3 costs reads, never a line; the batches are
// gone once the report is written. S3 requests are counted by a forwarding proxy of this test's own.
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';
import { after, before, test } from 'node:test';
import { loadConfig } from '../src/core/config.ts';
import { createContext, type Context } from '../src/core/context.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { runLayout } from '../src/core/layout.ts';
import { produceRun } from '../src/producer/produce.ts';
import { flushRow } from '../src/worker/flush.ts';
import { writeRunReport } from '../src/worker/finalize.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

let t: TestStack;
let proxy: Server;
let metaReads = 0;
let viaProxy: Context;

before(async () => {
  t = await startTestStack({ workers: false, webhook: false });
  const target = new URL(t.local.cfg.S3_ENDPOINT!);
  proxy = createServer((req, res) => {
    if (req.method === 'GET' && /\/meta\/[^/?]+\.json/.test(req.url ?? '')) metaReads++;
    const up = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      pipeline(answer, res).catch(() => undefined);
    });
    up.on('error', () => res.destroy());
    pipeline(req, up).catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  viaProxy = createContext(loadConfig({ ...t.local.env, S3_ENDPOINT: `http://127.0.0.1:${(proxy.address() as AddressInfo).port}` }), 'via-proxy', undefined, { metrics: () => createMetrics() });
});

after(async () => {
  await viaProxy.close();
  proxy.closeAllConnections();
  proxy.close();
  await t.stop();
});

/** Takes every row of a produced run through its transitions to completed, and flushes it as a worker does. */
async function finishRows(runId: string, keys: string[]): Promise<void> {
  for (const [i, key] of keys.entries()) {
    const row = (await t.ctx.queues.submit.getJobs(['waiting', 'prioritized', 'delayed'])).find((j) => j.data.runId === runId && j.data.key === key)!;
    const claim = await viaProxy.rows.claimSubmit(runId, key, row.data.line, row.data.row);
    assert.equal(claim.outcome, 'submit');
    await viaProxy.rows.recordSubmit(runId, key, 1, `req-${runId}-${key}`, Date.now() + 60_000);
    assert.equal(await viaProxy.rows.recordResult(runId, key, { requestId: `req-${runId}-${key}`, status: 'OK' }), 'store');
    const image = { key: runLayout(viaProxy.cfg.S3_PREFIX, runId).image(key, 0, 'png'), sourceUrl: 'http://x/0.png', contentType: 'image/png', bytes: 1, sha256: 'ab' };
    assert.ok(await viaProxy.rows.completeRow(runId, key, `req-${runId}-${key}`, [image], String(1000 + i), 'p'));
    await flushRow(viaProxy, runId, key);
  }
}

async function reportOf(runId: string): Promise<string> {
  return (await t.ctx.storage.getText(runLayout(t.ctx.cfg.S3_PREFIX, runId).report))!;
}

async function partsOf(runId: string): Promise<string[]> {
  const keys: string[] = [];
  for await (const o of t.ctx.storage.list(runLayout(t.ctx.cfg.S3_PREFIX, runId).reportParts)) keys.push(o.key);
  return keys;
}

async function produced(name: string): Promise<{ runId: string; keys: string[] }> {
  const face = await faceDataUri(1);
  const ids = ['a', 'b', 'c', 'd', 'e'];
  const csv = ['id,face_url', ...ids.map((id) => `${id},"${face}"`), 'bad,ftp://nope'].join('\n');
  const { runId } = await produceRun(t.ctx, await t.manifest(name, `${csv}\n`), { inline: true });
  return { runId, keys: ids };
}

test('the report of finished rows is built from their batched lines without reading each row’s metadata', async () => {
  const { runId, keys } = await produced('batched.csv');
  await finishRows(runId, keys);
  metaReads = 0;
  const summary = await writeRunReport(viaProxy, runId);
  assert.equal(summary?.completed, 5);
  assert.equal(metaReads, 0, 'no row metadata read');
  const lines = (await reportOf(runId)).trimEnd().split('\n');
  assert.equal(lines.length, 7);
  assert.match(lines[1]!, new RegExp(`^2,a,a,.*,completed,req-${runId}-a,1,runs/${runId}/images/a/0\\.png,1000,,,,96,96,[0-9a-f]{64}$`));
  assert.match(lines[6]!, /^7,bad,bad,ftp:\/\/nope,rejected,,,,,"face_url/);
  assert.deepEqual(await partsOf(runId), [], 'the batches are removed once the report is written');
});

test('lines whose batch never reached S3 are read from the rows’ metadata, and the report is the same', async () => {
  const { runId, keys } = await produced('lost.csv');
  await finishRows(runId, keys);
  const parts = await partsOf(runId);
  assert.ok(parts.length > 0);
  // As if the batches had been lost: the report must come out the same from the metadata objects.
  await t.ctx.storage.deletePrefix(runLayout(t.ctx.cfg.S3_PREFIX, runId).reportParts);
  metaReads = 0;
  await writeRunReport(viaProxy, runId);
  // Five completed rows and the rejected one: its reason was in a (lost) part too, and it has no metadata.
  assert.equal(metaReads, 6);
  const fromMeta = await reportOf(runId);
  const lines = fromMeta.trimEnd().split('\n');
  assert.equal(lines.length, 7);
  assert.match(lines[6]!, /^7,bad,bad,ftp:\/\/nope,rejected,,,,,"face_url/, 'the rejected row keeps its reason, from the manifest');
  assert.match(lines[5]!, new RegExp(`^6,e,e,.*,completed,req-${runId}-e,1,runs/${runId}/images/e/0\\.png,1004,,,,96,96,[0-9a-f]{64}$`));
});
