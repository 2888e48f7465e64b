// A result file is what its first bytes say, not what its Content-Type (or fal's content_type, or a
// data: URI) claims: only PNG, JPEG and WEBP are stored, SVG never, and the stored key's extension and
// Content-Type are the real format's.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { HeadObjectCommand } from '@aws-sdk/client-s3';
import sharp from 'sharp';
import { runLayout } from '../../src/core/layout.ts';
import type { RunRecord } from '../../src/core/rowState.ts';
import { produceRun } from '../../src/producer/produce.ts';
import { waitForRun } from '../../src/producer/wait.ts';
import { openImage } from '../../src/core/download.ts';
import type { RowMeta } from '../../src/worker/flush.ts';
import { faceDataUri } from '../helpers/faces.ts';
import { refused } from '../helpers/refused.ts';
import { startHostileCdn, type HostileCdn } from '../helpers/hostileCdn.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';

const SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><script>alert(1)</script></svg>';

let cdn: HostileCdn;
let t: TestStack;
let svgServer: Server;
let svgBase = '';
let run: RunRecord;
const metas: Record<string, RowMeta | undefined> = {};

before(async () => {
  cdn = await startHostileCdn();
  t = await startTestStack({ emulator: { publicUrl: cdn.url }, env: { STORE_MAX_TRIES: '3', STORE_RETRY_DELAY_MS: '50' } });
  cdn.forwardTo(t.local.emulator!.port);
  // PNG results come back as JPEG bytes that claim to be PNG; WEBP results as an HTML page that claims to be PNG.
  cdn.answer('png', async (file, res) => void res.writeHead(200, { 'content-type': 'image/png' }).end(await sharp(file.body).jpeg().toBuffer()));
  cdn.answer('webp', (_file, res) => void res.writeHead(200, { 'content-type': 'image/png' }).end('<!doctype html><html><body>not an image</body></html>'));
  const manifest = `id,face_url,output_format\ndisguised,"${await faceDataUri(1)}",png\nhtml,"${await faceDataUri(2)}",webp\nplain,"${await faceDataUri(3)}",jpeg\n`;
  const { runId } = await produceRun(t.ctx, await t.manifest('m.csv', manifest));
  run = await waitForRun(t.ctx, runId, { timeoutMs: 30_000, intervalMs: 100 });
  const layout = runLayout(t.ctx.cfg.S3_PREFIX, runId);
  for (const key of ['disguised', 'html', 'plain']) metas[key] = await t.ctx.storage.getJson<RowMeta>(layout.meta(key));

  svgServer = createServer((req, res) => {
    res.writeHead(200, { 'content-type': req.url === '/as-png' ? 'image/png' : 'image/svg+xml' }).end(SVG);
  });
  await new Promise<void>((r) => svgServer.listen(0, '127.0.0.1', r));
  svgBase = `http://127.0.0.1:${(svgServer.address() as AddressInfo).port}`;
});

after(async () => {
  await new Promise<void>((r) => svgServer.close(() => r()));
  await t.stop();
  await cdn.close();
});

const policy = () => ({ allowedHosts: [new URL(svgBase).host], maxBytes: 100_000, timeoutMs: 5000 });

test('an HTML body sent as image/png fails its row at the first try and nothing of it is stored', async () => {
  assert.equal(run.failed, 1);
  assert.equal(metas.html?.status, 'failed');
  assert.match(metas.html?.error ?? '', /is not a PNG, JPEG or WEBP image \(it claimed image\/png; it starts with "<!doctype html>/);
  assert.deepEqual(metas.html?.images, []);
  assert.equal(cdn.gets('webp'), 1);
});

test("a JPEG sent as image/png is stored under .jpeg with image/jpeg, the real format", async () => {
  assert.equal(metas.disguised?.status, 'completed');
  const [img] = metas.disguised!.images;
  assert.match(img!.key, /\/images\/disguised\/0\.jpeg$/);
  assert.equal(img!.content_type, 'image/jpeg');
  const head = await t.ctx.storage.client.send(new HeadObjectCommand({ Bucket: t.ctx.storage.bucket, Key: img!.key }));
  assert.equal(head.ContentType, 'image/jpeg');
  assert.equal(metas.plain?.status, 'completed');
});

test('an SVG result is refused by URL, whether it says image/svg+xml or claims image/png', async () => {
  await assert.rejects(openImage(`${svgBase}/as-svg`, policy()), refused(true, /SVG is never accepted/));
  await assert.rejects(openImage(`${svgBase}/as-png`, policy()), refused(true, /not a PNG, JPEG or WEBP image/));
});

test('an SVG result is refused as a data: URI (sync_mode), whatever type the URI claims', async () => {
  const b64 = Buffer.from(SVG).toString('base64');
  await assert.rejects(openImage(`data:image/svg+xml;base64,${b64}`, policy()), refused(true, /SVG is never accepted/));
  await assert.rejects(openImage(`data:image/png;base64,${b64}`, policy()), refused(true, /not a PNG, JPEG or WEBP image/));
});
