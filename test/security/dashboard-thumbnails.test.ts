// The dashboard serves every picture itself: its CSP allows images only from 'self', and viewing a
// run makes no browser fetch a manifest's face from another host. A face is served only as the row
// names it and the face rule allows (s3:// with the service's credentials only inside what the rule
// allows), from public addresses only, within the size limit, and only PNG/JPEG/WEBP by its bytes.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import type { RunningAdmin } from '../../src/index.ts';
import { facePng } from '../helpers/faces.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';

const PREFIX = 'pb/';
const MAX_BYTES = 4000;
let t: TestStack;
let admin: RunningAdmin;
let cdn: Server;
let cdnGets = 0;
let page = '';
let csp = '';

before(async () => {
  // A face host on this machine: a manifest may name it, the dashboard must never fetch from it.
  cdn = createServer((_req, res) => {
    cdnGets++;
    res.writeHead(200, { 'content-type': 'image/png' }).end();
  });
  cdn.listen(0, '127.0.0.1');
  await once(cdn, 'listening');
  t = await startTestStack({ env: { S3_PREFIX: PREFIX, FACE_PREFIXES: `s3://portrait-test/${PREFIX}faces/` }, policy: { dashboard: { thumbnailMaxBytes: MAX_BYTES } } });
  admin = await t.pb.startAdmin();
  const small = await facePng(1);
  assert.ok(small.length < MAX_BYTES, `a small face (${small.length} bytes)`);
  await t.ctx.storage.putObject(`${PREFIX}faces/small.png`, small, 'image/png');
  await t.ctx.storage.putObject(`${PREFIX}faces/large.png`, Buffer.concat([small, Buffer.alloc(MAX_BYTES)]), 'image/png');
  await t.ctx.storage.putObject(`${PREFIX}faces/script.png`, '<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', 'image/png');
  // Same bucket, outside FACE_PREFIXES: another team's file, never a face of this run.
  await t.ctx.storage.putObject('private/other-team.png', small, 'image/png');
  const bucket = t.ctx.storage.bucket;
  const loopback = `http://127.0.0.1:${(cdn.address() as AddressInfo).port}/face.png`;
  // Every row is rejected (a bad num_images) so no fal call fetches a face: what reads them is the dashboard.
  const rows = [
    'id,face_url,num_images',
    `ours,s3://${bucket}/${PREFIX}faces/small.png,many`,
    `large,s3://${bucket}/${PREFIX}faces/large.png,many`,
    `script,s3://${bucket}/${PREFIX}faces/script.png,many`,
    `foreign,s3://${bucket}/private/other-team.png,many`,
    `local-net,${loopback},many`,
    `done,s3://${bucket}/${PREFIX}faces/small.png,1`,
  ];
  const { runId } = await t.pb.startRun(await t.manifest('faces.csv', `${rows.join('\n')}\n`));
  const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
  assert.deepEqual([run.rejected, run.completed], [5, 1]);
  const res = await fetch(`${admin.url}/ui/runs/${runId}`, { headers: { authorization: `Bearer ${t.local.env.DASHBOARD_TOKEN}` } });
  csp = res.headers.get('content-security-policy') ?? '';
  page = await res.text();
});

after(async () => {
  await admin.close();
  await t.stop();
  cdn.closeAllConnections();
  await new Promise((r) => cdn.close(r));
});

const unescape = (s: string) => s.replace(/&#38;/g, '&');
/** The face <img> of a row's card, if it has one. */
function faceOf(row: string): string | undefined {
  const card = new RegExp(`<figure class="card [a-z]+" data-row="${row}">([\\s\\S]*?)</figure>`).exec(page)?.[1];
  assert.ok(card, `the card of ${row}`);
  const src = /<img class="face" src="([^"]+)"/.exec(card)?.[1];
  return src === undefined ? undefined : unescape(src);
}
const get = (path: string) => fetch(`${admin.url}${path}`, { headers: { authorization: `Bearer ${t.local.env.DASHBOARD_TOKEN}` } });

test("the dashboard's CSP allows images only from itself, and every picture on the page is its own", () => {
  const img = /img-src ([^;]*)/.exec(csp)?.[1];
  assert.equal(img, "'self'", csp);
  const sources = [...page.matchAll(/<img [^>]*src="([^"]+)"/g)].map((m) => unescape(m[1]!));
  assert.ok(sources.length >= 3, sources.join('\n'));
  for (const src of sources) assert.match(src, /^\/ui\/runs\//, `a picture served by the dashboard: ${src}`);
  assert.doesNotMatch(page, /X-Amz-Signature|127\.0\.0\.1:\d+\/face\.png"/, 'no presigned URL and no face host in any src');
});

test('an s3:// face the rule allows is streamed by the dashboard, with its real type', async () => {
  const res = await get(faceOf('ours')!);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-type'), 'image/png');
  assert.deepEqual(Buffer.from(await res.arrayBuffer()), await facePng(1));
  const portrait = /<img class="portrait" src="([^"]+)"/.exec(page)?.[1];
  assert.ok(portrait, 'the completed row shows its portrait');
  const p = await get(unescape(portrait));
  assert.equal(p.status, 200);
  assert.match(p.headers.get('content-type') ?? '', /^image\/(png|jpeg|webp)$/);
});

test('a face outside what the rule allows (same bucket, another folder) is not shown, and a link cannot be bent to it', async () => {
  assert.equal(faceOf('foreign'), undefined, 'no picture for a face the run may not read');
  const ours = new URL(faceOf('ours')!, admin.url);
  ours.searchParams.set('src', `s3://${t.ctx.storage.bucket}/private/other-team.png`);
  const bent = await get(`${ours.pathname}${ours.search}`);
  assert.equal(bent.status, 404, 'the link is signed for its row and face');
});

test('a face at a private address is never fetched by the dashboard', async () => {
  const link = faceOf('local-net');
  assert.ok(link, 'the row names an http face: the page links the thumbnail route');
  const res = await get(link);
  assert.equal(res.status, 404);
  assert.match(await res.text(), /127\.0\.0\.1 is not a public address/);
  assert.equal(cdnGets, 0, 'nothing connected to the private host');
});

test('a face over the thumbnail limit, or not a PNG/JPEG/WEBP by its bytes, is refused', async () => {
  const large = await get(faceOf('large')!);
  assert.equal(large.status, 404);
  assert.match(await large.text(), new RegExp(`over the ${MAX_BYTES}-byte thumbnail limit`));
  const script = await get(faceOf('script')!);
  assert.equal(script.status, 404);
  assert.match(await script.text(), /not a PNG, JPEG or WEBP image/);
});
