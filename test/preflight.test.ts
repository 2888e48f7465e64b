// Know before paying, on the real stack: every face is looked at before its row is submitted. Faces
// that cannot be read, are not images, or are too small or too large are rejected with the reason and
// never reach fal (the emulator's counts); a face's header gives an unsized row its estimate (the
// model's output is the face's size), so the dry run's megapixels are what the emulator bills, and the
// cost cap holds on large unsized faces.
import assert from 'node:assert/strict';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { join } from 'node:path';
import { parse } from 'csv-parse/sync';
import sharp from 'sharp';
import { createHash } from 'node:crypto';
import { loadConfig } from '../src/core/config.ts';
import { runLayout } from '../src/core/layout.ts';
import type { PortraitBatch } from '../src/index.ts';
import { dryRun } from '../src/producer/inspect.ts';
import { lookAtFace, lookAtFaces, type PreflightSettings } from '../src/producer/preflight.ts';
import { DependencyError } from '../src/core/dependencies.ts';
import { Storage } from '../src/core/s3.ts';
import type { RowMeta } from '../src/worker/flush.ts';
import { runCli } from './helpers/cli.ts';
import { faceDataUri, facePng } from './helpers/faces.ts';
import { freePort } from '../src/local/ports.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

let t: TestStack;
let faces: Server;
let faceBase = '';
let deadBase = '';
/** Requests the face server got, by path, with their headers. */
const seen: { path: string; headers: IncomingHttpHeaders }[] = [];

/** A PNG's signature and IHDR claiming any size: all preflight reads of a face is its header. */
function pngHeader(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(25);
  ihdr.writeUInt32BE(13, 0);
  ihdr.write('IHDR', 4, 'latin1');
  ihdr.writeUInt32BE(width, 8);
  ihdr.writeUInt32BE(height, 12);
  ihdr.writeUInt8(8, 16);
  ihdr.writeUInt8(2, 17);
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), ihdr]);
}

before(async () => {
  const good = await facePng(3);
  const tiny = await sharp({ create: { width: 1, height: 1, channels: 3, background: '#888' } }).png().toBuffer();
  // 25 MiB: a good face's bytes padded with zeros, over MAX_FACE_BYTES (20 MiB).
  const heavy = Buffer.concat([good, Buffer.alloc(25 * 1024 * 1024)]);
  faces = createServer((req, res) => {
    seen.push({ path: req.url ?? '', headers: req.headers });
    const path = req.url ?? '';
    if (path === '/good.png') return void res.writeHead(200, { 'content-type': 'image/png' }).end(good);
    // Busy once, then the face: preflight tries a 503 again.
    if (path === '/flaky.png') {
      const first = seen.filter((s) => s.path === path).length === 1;
      return void (first ? res.writeHead(503).end() : res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(good));
    }
    // An error page (or a login page) served under an image's name and type.
    if (path === '/html.png') return void res.writeHead(200, { 'content-type': 'image/png' }).end('<!doctype html><html><body>Sign in to see this photo</body></html>');
    if (path === '/tiny.png') return void res.writeHead(200, { 'content-type': 'image/png' }).end(tiny);
    if (path === '/huge.png') return void res.writeHead(200, { 'content-type': 'image/png' }).end(pngHeader(20_000, 20_000));
    if (path === '/heavy.png') {
      // Honours the range a client asks for, as S3 and CDNs do.
      const m = /^bytes=0-(\d+)$/.exec(String(req.headers.range ?? ''));
      if (!m) return void res.writeHead(200, { 'content-type': 'image/png', 'content-length': heavy.length }).end(heavy);
      const part = heavy.subarray(0, Number(m[1]) + 1);
      return void res.writeHead(206, { 'content-type': 'image/png', 'content-range': `bytes 0-${part.length - 1}/${heavy.length}` }).end(part);
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => faces.listen(0, '127.0.0.1', resolve));
  const port = (faces.address() as AddressInfo).port;
  faceBase = `http://127.0.0.1:${port}`;
  const dead = await freePort();
  deadBase = `http://127.0.0.1:${dead}`;
  t = await startTestStack({
    // The test's face server is on loopback: allowed on purpose, as an operator would allow a private face host.
    env: { PREFLIGHT_PRIVATE_HOSTS: `127.0.0.1:${port},127.0.0.1:${dead}`, PRICE_PER_MEGAPIXEL: '1', FAL_CONCURRENCY: '2' },
    policy: { preflight: { backoff: { baseMs: 20, capMs: 50 }, timeoutMs: 5000 } },
  });
});

after(async () => {
  await t?.stop();
  faces.closeAllConnections();
  await new Promise((r) => faces.close(r));
});

async function reportOf(pb: PortraitBatch, runId: string): Promise<Record<string, string>[]> {
  const chunks: Buffer[] = [];
  for await (const c of await pb.report(runId)) chunks.push(c as Buffer);
  return parse(Buffer.concat(chunks), { columns: true, bom: true }) as Record<string, string>[];
}

/** fal submissions the emulator accepted for rows of this run. */
function acceptedRows(runId: string): string[] {
  return Object.keys(t.local.emulator!.stats().acceptedByRow)
    .filter((k) => k.startsWith(`${runId}/`))
    .map((k) => k.slice(runId.length + 1));
}

test('faces that cannot be read, are not images, or are too small or too large are rejected with their reason, and never reach fal', async () => {
  const submitsBefore = t.local.emulator!.stats().submits;
  const tiny = await sharp({ create: { width: 1, height: 1, channels: 3, background: '#888' } }).png().toBuffer();
  const rows = [
    'id,face_url',
    `good,${faceBase}/good.png`,
    `good-data,"${await faceDataUri(4)}"`,
    `flaky,${faceBase}/flaky.png`,
    `unreachable,${deadBase}/gone.png`,
    `missing,${faceBase}/missing.png`,
    `html,${faceBase}/html.png`,
    `tiny,${faceBase}/tiny.png`,
    `tiny-data,"data:image/png;base64,${tiny.toString('base64')}"`,
    `huge,${faceBase}/huge.png`,
    `heavy,${faceBase}/heavy.png`,
    // A private address nobody allowed: refused before any connection is made (no SSRF through preflight).
    `metadata,http://169.254.169.254/latest/meta-data/face.png`,
  ];
  const { runId } = await t.pb.startRun(await t.manifest('faces.csv', `${rows.join('\n')}\n`));
  const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
  assert.deepEqual([run.state, run.completed, run.failed, run.rejected], ['finished', 3, 0, 8]);

  assert.deepEqual(acceptedRows(runId).sort(), ['flaky', 'good', 'good-data'], 'fal was given only the rows whose faces passed');
  assert.equal(t.local.emulator!.stats().submits - submitsBefore, 3, '0 fal calls for the rejected rows');
  // Preflight's GETs ask for a range; fal's own fetch of the face (the emulator's) does not.
  assert.equal(seen.filter((s) => s.path === '/flaky.png' && s.headers.range).length, 2, 'a 503 is tried again; the bytes decide, not the claimed type');

  const report = new Map((await reportOf(t.pb, runId)).map((r) => [r.id!, r]));
  const expect: Record<string, [string, RegExp]> = {
    unreachable: ['face_unreachable', /could not be read: download of .* failed: .*ECONNREFUSED/],
    missing: ['face_unreachable', /answered 404/],
    html: ['face_not_image', /not an image: .*not a PNG, JPEG or WEBP image .*starts with "<!doctype html>/],
    tiny: ['face_too_small', /1×1 pixels, under MIN_FACE_PX \(64\) on a side/],
    'tiny-data': ['face_too_small', /1×1 pixels, under MIN_FACE_PX \(64\)/],
    huge: ['face_too_large', /20000×20000 pixels \(381\.5 MP\), over MAX_FACE_MEGAPIXELS \(50\)/],
    heavy: ['face_too_large', /the face is 26\d{6} bytes, over MAX_FACE_BYTES \(20971520\)/],
    metadata: ['face_unreachable', /169\.254\.169\.254 is not a public address/],
  };
  for (const [id, [type, reason]] of Object.entries(expect)) {
    const r = report.get(id)!;
    assert.deepEqual([r.status, r.error_type, r.error_category, r.attempts, r.request_id], ['rejected', type, 'input', '', ''], `row ${id}`);
    assert.match(r.error!, /^face_url: /, `row ${id} names its column`);
    assert.match(r.error!, reason, `row ${id}: ${r.error}`);
  }
  // What preflight read of a face that passed is in the report and the row's metadata.
  const good = report.get('good')!;
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  assert.deepEqual([good.status, good.face_width, good.face_height, good.face_sha256], ['completed', '96', '96', sha(await facePng(3))]);
  const meta = (await t.ctx.storage.getJson<RowMeta>(runLayout(t.ctx.cfg.S3_PREFIX, runId).meta('good-data')))!;
  const dataPng = Buffer.from((await faceDataUri(4)).split(',')[1]!, 'base64');
  assert.deepEqual([meta.face_width, meta.face_height, meta.face_bytes, meta.face_sha256], [96, 96, dataPng.length, sha(dataPng)]);

  // Only the first bytes of a face were asked for, and the heavy one's 25 MiB were never sent.
  const heavyGets = seen.filter((s) => s.path === '/heavy.png');
  assert.ok(heavyGets.length >= 1);
  for (const g of heavyGets) assert.equal(g.headers.range, 'bytes=0-262143');
  assert.equal(seen.filter((s) => s.path === '/gone.png').length, 0);
});

/** A JPEG face of this size on disk, in the test's folder. */
async function jpegFace(name: string, width: number, height: number): Promise<string> {
  await sharp({ create: { width, height, channels: 3, background: '#b08060' } }).jpeg({ quality: 50 }).toFile(join(t.dir, name));
  return name;
}

test("an unsized row is estimated at its face's size, and the dry run's megapixels are what fal bills", async () => {
  const big = await jpegFace('big.jpg', 3000, 4000); // 12 MP
  const mid = await jpegFace('mid.jpg', 1500, 1500); // 2.15 MP, billed 3
  const small = await faceDataUri(5); // 96×96: 1 MP
  const rows = [
    'id,face_url,image_size,num_images,output_format',
    `sized,"${small}",square_hd,,jpeg`, // 1
    `two,"${small}",768x1024,2,jpeg`, // 2
    `four,"${small}",2048x2048,,jpeg`, // 4
    `small,"${small}",,3,jpeg`, // 3
    `big,${big},,,jpeg`, // 12
    `mid,${mid},,,jpeg`, // 3
  ];
  const manifest = await t.manifest('mixed.csv', `${rows.join('\n')}\n`);
  const cfg = loadConfig({ ...t.local.env, PRICE_PER_MEGAPIXEL: '1' });

  const blind = await dryRun(manifest, cfg);
  assert.deepEqual([blind.megapixels, blind.unsizedRows], [1 + 2 + 4 + 3 + 1 + 1, 3], 'without preflight an unsized row counts 1 MP an image');
  const est = await dryRun(manifest, cfg, { preflight: true });
  assert.deepEqual([est.megapixels, est.unsizedRows, est.rejected, est.estimatedCost], [25, 0, 0, 25]);
  assert.deepEqual(est.preflight, { looked: 6, refused: 0 });

  const billedBefore = t.local.emulator!.stats().billedMegapixels;
  const { runId } = await t.pb.startRun(manifest);
  const run = await t.pb.waitForRun(runId, { timeoutMs: 120_000 });
  assert.deepEqual([run.state, run.completed], ['finished', 6]);
  const billed = t.local.emulator!.stats().billedMegapixels - billedBefore;
  assert.ok(Math.abs(billed - est.megapixels) <= est.megapixels * 0.01, `fal billed ${billed} MP, the dry run said ${est.megapixels}`);
  assert.equal(run.cost, est.estimatedCost, "the run's cost counts each row at its face's size");
});

test('--max-cost stops before passing the cap on large unsized faces', async () => {
  const big = await jpegFace('big-cap.jpg', 3000, 4000); // 12 MP an image, 12 a row at 1 a megapixel
  const rows = ['id,face_url,output_format'];
  for (let i = 0; i < 6; i++) rows.push(`r${i},${big},jpeg`);
  const billedBefore = t.local.emulator!.stats().billedMegapixels;
  const { runId } = await t.pb.startRun(await t.manifest('large.csv', `${rows.join('\n')}\n`), { maxCost: 30 });
  const run = await t.pb.waitForRun(runId, { timeoutMs: 120_000 });
  assert.equal(run.state, 'stopped');
  assert.match(run.stopReason ?? '', /cost cap/);
  assert.equal(acceptedRows(runId).length, 2, 'two rows (24) fit under 30; a third (36) would pass it');
  assert.ok(run.cost <= 30, `cost ${run.cost}`);
  assert.ok(t.local.emulator!.stats().billedMegapixels - billedBefore <= 30, 'fal billed no more than the cap');
});

test('run --dry-run --preflight --json looks at every face with nothing running; --preflight alone is refused', async () => {
  const big = await jpegFace('big-cli.jpg', 3000, 4000);
  const tiny = await sharp({ create: { width: 1, height: 1, channels: 3, background: '#888' } }).png().toBuffer();
  const rows = ['id,face_url,num_images', `big,${big},2`, `small,"${await faceDataUri(6)}",`, `tiny,"data:image/png;base64,${tiny.toString('base64')}",`];
  const manifest = await t.manifest('cli.csv', `${rows.join('\n')}\n`);
  const r = await runCli(['run', manifest, '--dry-run', '--preflight', '--json']).exited;
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), {
    rows: 3,
    valid: 2,
    rejected: 1,
    images: 3,
    megapixels: 25,
    estimatedCost: 0.525,
    currency: 'USD',
    unsizedRows: 0,
    preflight: { looked: 3, refused: 1 },
  });
  const alone = await runCli(['run', manifest, '--preflight']).exited;
  assert.equal(alone.code, 2);
  assert.match(alone.stderr, /--preflight goes with --dry-run/);
});

test('our own S3 not answering is no verdict on a face: preflight throws an S3 outage (the batch waits) instead of refusing the row; a closing worker stops it', async () => {
  const settings: PreflightSettings = {
    minPx: 64,
    maxMegapixels: 50,
    maxBytes: 20 * 1024 * 1024,
    privateHosts: [],
    concurrency: 2,
    policy: { tries: 2, backoff: { baseMs: 10, capMs: 20, jitter: 0 }, timeoutMs: 2000, headerBytes: 1024 },
  };
  // An S3 endpoint on a loopback port nobody listens on: S3 is down.
  const down = new Storage({ S3_BUCKET: 'faces', S3_PREFIX: '', S3_ENDPOINT: deadBase, S3_REGION: 'us-east-1', S3_FORCE_PATH_STYLE: true });
  await assert.rejects(
    lookAtFace({ kind: 's3', bucket: 'faces', key: 'team-a/face.png' }, settings, () => down),
    (err: unknown) => err instanceof DependencyError && err.dependency === 's3',
  );
  // The same face on a working S3 that has no such object: a verdict on the face (the row is refused).
  const verdict = await lookAtFace({ kind: 's3', bucket: t.ctx.storage.bucket, key: 'no/such/face.png' }, settings, () => t.ctx.storage);
  assert.ok('refused' in verdict && verdict.refused.errorType === 'face_unreachable', JSON.stringify(verdict));
  // A closing worker: no face is started once the signal is aborted.
  const closing = AbortSignal.abort(new Error('closing'));
  await assert.rejects(lookAtFaces([{ kind: 'url', url: `${faceBase}/good.png` }], settings, undefined, undefined, closing), /closing/);
});
