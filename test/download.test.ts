// Result downloads: only allowed hosts (every redirect hop), only images, never over the size limit.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { freePort } from '../src/local/ports.ts';
import { hostAllowed, openImage, type DownloadPolicy } from '../src/core/download.ts';
import { refused } from './helpers/refused.ts';

/** A body that starts like a PNG: the downloader checks the first bytes, not only the content type. */
const png = (n: number) => Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), Buffer.alloc(n - 8, 7)]);

let server: Server;
/** Responses of /half.png waiting for the test to send the rest. */
const held: (() => void)[] = [];
const heldSockets: Socket[] = [];
let base = '';
let port = 0;
before(async () => {
  server = createServer((req, res) => {
    const u = req.url ?? '';
    if (u === '/ok.png') return void res.writeHead(200, { 'content-type': 'image/png' }).end(png(100));
    if (u === '/big.png') return void res.writeHead(200, { 'content-type': 'image/png', 'content-length': '5000' }).end(png(5000));
    if (u === '/chunked.png') {
      res.writeHead(200, { 'content-type': 'image/png' });
      for (let i = 0; i < 10; i++) res.write(png(500));
      return void res.end();
    }
    if (u === '/page') return void res.writeHead(200, { 'content-type': 'text/html' }).end('<html>');
    if (u === '/hop') return void res.writeHead(302, { location: '/ok.png' }).end();
    if (u === '/away') return void res.writeHead(302, { location: 'http://127.0.0.2:9/latest/meta-data' }).end();
    if (u === '/gone') return void res.writeHead(404).end();
    if (u === '/flaky') return void res.writeHead(503).end();
    const hops = /^\/hops\/(\d+)$/.exec(u);
    if (hops) return void res.writeHead(302, { location: Number(hops[1]) > 0 ? `/hops/${Number(hops[1]) - 1}` : '/ok.png' }).end();
    const status = /^\/status\/(\d+)$/.exec(u);
    if (status) return void res.writeHead(Number(status[1])).end();
    if (u === '/exact.png') return void res.writeHead(200, { 'content-type': 'image/png', 'content-length': '1000' }).end(png(1000));
    if (u === '/exact-chunked.png') {
      res.writeHead(200, { 'content-type': 'image/png' });
      for (let i = 0; i < 4; i++) res.write(png(250));
      return void res.end();
    }
    if (u === '/tiny.png') return void res.writeHead(200, { 'content-type': 'image/png' }).end(png(8));
    if (u === '/shouting.png') return void res.writeHead(200, { 'content-type': 'IMAGE/PNG; charset=binary' }).end(png(100));
    if (u === '/untyped') return void res.writeHead(200).end(png(100));
    if (u === '/drawing.svg') return void res.writeHead(200, { 'content-type': 'image/svg+xml' }).end('<svg/>');
    if (u === '/fake.png') return void res.writeHead(200, { 'content-type': 'image/png' }).end('<html>not a png</html>');
    if (u === '/accept') return void res.writeHead(200, { 'content-type': 'image/png' }).end(Buffer.concat([png(8), Buffer.from(req.headers.accept ?? '')]));
    if (u === '/headers-only') return void res.writeHead(200, { 'content-type': 'image/png' }).flushHeaders();
    if (u === '/half.png' || u === '/cut.png') {
      // The first bytes now; the rest when the test says so (or never: the connection is cut).
      res.writeHead(200, { 'content-type': 'image/png' });
      res.write(png(64));
      if (u === '/cut.png') return void setImmediate(() => res.socket?.destroy());
      heldSockets.push(res.socket!);
      return void held.push(() => res.end(png(64)));
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
  base = `http://127.0.0.1:${port}`;
});
after(() => new Promise<void>((r) => server.close(() => r())));

const policy = (): DownloadPolicy => ({ allowedHosts: [`127.0.0.1:${port}`], maxBytes: 1000, timeoutMs: 5000 });
const read = async (url: string, p: DownloadPolicy = policy()) => {
  const img = await openImage(url, p);
  const chunks: Buffer[] = [];
  for await (const c of img.body) chunks.push(c as Buffer);
  return { ...img, bytes: Buffer.concat(chunks).length };
};

test('host patterns: exact, port-qualified, *.subdomain', () => {
  assert.ok(hostAllowed(new URL('https://v3.fal.media/x'), ['*.fal.media']));
  assert.ok(!hostAllowed(new URL('https://fal.media.evil.com/x'), ['*.fal.media']));
  assert.ok(!hostAllowed(new URL('https://evilfal.media/x'), ['*.fal.media']));
  assert.ok(hostAllowed(new URL('http://127.0.0.1:9000/x'), ['127.0.0.1:9000']));
  assert.ok(!hostAllowed(new URL('http://127.0.0.1:9001/x'), ['127.0.0.1:9000']));
});

test('an allowed image downloads, following a same-host redirect', async () => {
  assert.deepEqual(await read(`${base}/ok.png`).then((r) => [r.contentType, r.bytes]), ['image/png', 100]);
  assert.equal((await read(`${base}/hop`)).bytes, 100);
});

test('refused: other hosts (also behind a redirect), other schemes, non-images, oversized bodies', async () => {
  await assert.rejects(read('http://127.0.0.3:9/a.png'), refused(true, /not in RESULT_HOSTS/));
  await assert.rejects(read(`${base}/away`), refused(true, /127\.0\.0\.2:9.*not in RESULT_HOSTS/));
  await assert.rejects(read('file:///etc/passwd'), refused(true, /refusing file:/));
  await assert.rejects(read(`${base}/page`), refused(true, /text\/html, not an image/));
  await assert.rejects(read(`${base}/big.png`), refused(true, /5000 bytes, over the 1000-byte limit/));
  await assert.rejects(read(`${base}/chunked.png`), refused(true, /exceeded the 1000-byte limit/));
});

test('a 404 is permanent, a 503 is worth retrying; data: URIs decode', async () => {
  await assert.rejects(read(`${base}/gone`), refused(true, /404/));
  await assert.rejects(read(`${base}/flaky`), refused(false, /503/));
  const webp = Buffer.concat([Buffer.from('RIFF'), Buffer.alloc(4), Buffer.from('WEBPVP8 ')]);
  const d = await read(`data:image/webp;base64,${webp.toString('base64')}`);
  assert.deepEqual([d.contentType, d.bytes], ['image/webp', 16]);
  await assert.rejects(read('data:text/plain;base64,aGk='), refused(true, /not a base64 image/));
});

test('redirects: up to 5 hops are followed, a 6th is refused; a redirect must say where to', async () => {
  // /hops/N answers N + 1 redirects.
  assert.equal((await read(`${base}/hops/4`)).bytes, 100);
  await assert.rejects(read(`${base}/hops/5`), refused(true, /more than 5 redirects/));
  await assert.rejects(read(`${base}/status/302`), refused(true, /redirect without Location/));
  await assert.rejects(read(`${base}/status/300`), refused(true, /redirect without Location/));
  await assert.rejects(read(`${base}/status/399`), refused(true, /redirect without Location/));
});

test('status classes: client errors are permanent, but for 408 and 429; server errors are worth retrying', async () => {
  for (const [status, permanent] of [[400, true], [403, true], [499, true], [408, false], [429, false], [500, false], [502, false]] as const) {
    await assert.rejects(read(`${base}/status/${status}`), refused(permanent, new RegExp(`answered ${status}$`)), String(status));
  }
});

test('the size limit is inclusive: exactly MAX_IMAGE_BYTES downloads, declared or counted', async () => {
  assert.equal((await read(`${base}/exact.png`)).bytes, 1000);
  assert.equal((await read(`${base}/exact-chunked.png`)).bytes, 1000);
  assert.equal((await read(`${base}/tiny.png`)).bytes, 8, 'a body shorter than the bytes the format is read from');
});

test('the content type: parameters and case do not matter; none, SVG, or bytes that are not an image are refused', async () => {
  assert.deepEqual(await read(`${base}/shouting.png`).then((r) => [r.contentType, r.bytes]), ['image/png', 100]);
  await assert.rejects(read(`${base}/untyped`), refused(true, /is of no content type, not an image/));
  await assert.rejects(read(`${base}/drawing.svg`), refused(true, /is an SVG image: SVG is never accepted/));
  await assert.rejects(read(`${base}/fake.png`), refused(true, /fake\.png is not a PNG, JPEG or WEBP image \(it claimed image\/png; it starts with "<html>not a png<"\)/));
  // The request says which formats are wanted (a CDN that negotiates would otherwise send e.g. AVIF).
  const img = await openImage(`${base}/accept`, policy());
  const chunks: Buffer[] = [];
  for await (const c of img.body) chunks.push(c as Buffer);
  assert.equal(Buffer.concat(chunks).subarray(8).toString(), 'image/png, image/jpeg, image/webp');
});

test('the body streams: the image is handed on after its first bytes, the rest follows', async () => {
  const img = await openImage(`${base}/half.png`, policy());
  assert.equal(img.format, 'png');
  assert.equal(held.length, 1, 'the server has not sent the rest yet');
  held.shift()!();
  const chunks: Buffer[] = [];
  for await (const c of img.body) chunks.push(c as Buffer);
  assert.equal(Buffer.concat(chunks).length, 128);
});

test('a reader that stops early lets go of the connection at once, not at the deadline', { timeout: 30_000 }, async () => {
  const img = await openImage(`${base}/half.png`, { ...policy(), timeoutMs: 600_000 });
  const closed = new Promise<void>((resolve) => heldSockets.at(-1)!.once('close', () => resolve()));
  for await (const _ of img.body) break;
  await closed;
  held.length = 0;
});

test('failures worth another try: a refused connection, a cut connection, a server that stalls', async () => {
  const closed = await freePort();
  const open = (url: string, timeoutMs = 5000) => openImage(url, { allowedHosts: [`127.0.0.1:${closed}`, `127.0.0.1:${port}`], maxBytes: 1000, timeoutMs });
  for (const scheme of ['http', 'https']) {
    await assert.rejects(open(`${scheme}://127.0.0.1:${closed}/x.png`), refused(false, new RegExp(`download of ${scheme}://127\\.0\\.0\\.1:${closed}/x\\.png failed: .*ECONNREFUSED`)));
  }
  const cut = await open(`${base}/cut.png`);
  await assert.rejects(
    (async () => {
      for await (const _ of cut.body);
    })(),
    refused(false, /cut\.png failed: /),
  );
  // A short DOWNLOAD_TIMEOUT_MS instead of waiting: before the body, and in the middle of it.
  await assert.rejects(open(`${base}/headers-only`, 200), refused(false, /headers-only did not finish within DOWNLOAD_TIMEOUT_MS \(200 ms\)/));
  const stalled = await open(`${base}/half.png`, 200);
  await assert.rejects(
    (async () => {
      for await (const _ of stalled.body);
    })(),
    refused(false, /half\.png did not finish within DOWNLOAD_TIMEOUT_MS \(200 ms\)/),
  );
  held.length = 0;
});

test('a bad URL and other hosts are refused naming the hosts that are allowed', async () => {
  await assert.rejects(read('http://[not-a-host/x.png'), refused(true, /not a URL: http:\/\/\[not-a-host\/x\.png/));
  const p = { ...policy(), allowedHosts: [`127.0.0.1:${port}`, '*.fal.media'] };
  await assert.rejects(read('http://127.0.0.3:9/a.png', p), refused(true, new RegExp(`not in RESULT_HOSTS \\(127\\.0\\.0\\.1:${port},\\*\\.fal\\.media;`)));
});

test('data: URIs: parameters before ;base64 are fine; a malformed header, SVG, non-image bytes and oversized images are refused', async () => {
  const b64 = (b: Buffer) => b.toString('base64');
  assert.deepEqual(await read(`data:image/png;name=face.png;base64,${b64(png(100))}`).then((r) => [r.contentType, r.bytes]), ['image/png', 100]);
  assert.equal((await read(`data:IMAGE/PNG;BASE64,${b64(png(1000))}`)).bytes, 1000, 'exactly the limit; type and encoding in capitals');
  await assert.rejects(read(`data:image/png;base64x,${b64(png(100))}`), refused(true, /not a base64 image/));
  await assert.rejects(read(`data:image/png;base64${b64(png(100))}`), refused(true, /not a base64 image/), 'no comma');
  await assert.rejects(read(`data:image/svg+xml;base64,${b64(Buffer.from('<svg/>'))}`), refused(true, /the inline \(data: URI\) image is an SVG image/));
  await assert.rejects(read(`data:image/png;base64,${b64(Buffer.from('hello there'))}`), refused(true, /the inline \(data: URI\) image is not a PNG, JPEG or WEBP image \(it claimed image\/png; it starts with "hello there"\)/));
  await assert.rejects(read(`data:image/png;base64,${b64(png(1001))}`), refused(true, /inline image is 1001 bytes, over the 1000-byte limit/));
});

test('anyPublicHost (dashboard thumbnails): any host at a public address; private, loopback and link-local ones refused by address or by what the name resolves to', async () => {
  const anyPublic: DownloadPolicy = { allowedHosts: [], anyPublicHost: true, maxBytes: 1000, timeoutMs: 5000 };
  for (const url of [`${base}/ok.png`, 'http://10.1.2.3/a.png', 'http://169.254.169.254/latest/meta-data', 'http://[::1]:80/a.png', 'http://[::ffff:127.0.0.1]/a.png', 'https://192.168.0.1/a.png']) {
    await assert.rejects(read(url, anyPublic), refused(true, /is not a public address/), url);
  }
  await assert.rejects(read(`http://localhost:${port}/ok.png`, anyPublic), refused(true, /localhost: it resolves to (127\.0\.0\.1|::1), which is not a public address/));
  await assert.rejects(read('ftp://example.com/a.png', anyPublic), refused(true, /refusing ftp:/));
  // Without it, the allow-list rules as before.
  await assert.rejects(read(`http://localhost:${port}/ok.png`), refused(true, /not in RESULT_HOSTS/));
});
