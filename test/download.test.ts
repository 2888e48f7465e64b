// Result downloads: only allowed hosts (every redirect hop), only images, never over the size limit.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { hostAllowed, openImage, type DownloadPolicy } from '../src/worker/download.ts';
import { refused } from './helpers/refused.ts';

/** A body that starts like a PNG: the downloader checks the first bytes, not only the content type. */
const png = (n: number) => Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), Buffer.alloc(n - 8, 7)]);

let server: Server;
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
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
  base = `http://127.0.0.1:${port}`;
});
after(() => new Promise<void>((r) => server.close(() => r())));

const policy = (): DownloadPolicy => ({ allowedHosts: [`127.0.0.1:${port}`], maxBytes: 1000, timeoutMs: 5000 });
const read = async (url: string) => {
  const img = await openImage(url, policy());
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
