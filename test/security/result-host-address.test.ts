// RESULT_HOSTS names are checked against the address they resolve to, on every redirect hop, in the
// connection's own lookup: a name resolving to a loopback, private or link-local address is refused.
// An IP literal listed in RESULT_HOSTS (the embedded stack's 127.0.0.1:<port>) is a deliberate
// allowance; an entry without a port allows only 80 and 443.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { openImage } from '../../src/core/download.ts';
import { hostAllowed, isPublicAddress } from '../../src/core/resultHosts.ts';
import { refused } from '../helpers/refused.ts';

const PNG = Buffer.concat([Buffer.from('89504e470d0a1a0a', 'hex'), Buffer.alloc(56, 1)]);

let server: Server;
let port = 0;
let gets = 0;
before(async () => {
  server = createServer((req, res) => {
    gets++;
    if (req.url === '/to-localhost') return void res.writeHead(302, { location: `http://localhost:${port}/ok.png` }).end();
    res.writeHead(200, { 'content-type': 'image/png' }).end(PNG);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
after(() => new Promise<void>((r) => server.close(() => r())));

const open = (url: string, allowedHosts: string[]) => openImage(url, { allowedHosts, maxBytes: 10_000, timeoutMs: 5000 });

test('a RESULT_HOSTS name that resolves to a loopback address is refused, and never requested', async () => {
  const before = gets;
  await assert.rejects(open(`http://localhost:${port}/ok.png`, [`localhost:${port}`]), refused(true, /localhost: it resolves to (127\.0\.0\.1|::1), which is not a public address/));
  assert.equal(gets, before);
});

test('a redirect hop to a listed name that resolves to a loopback address is refused', async () => {
  await assert.rejects(open(`http://127.0.0.1:${port}/to-localhost`, [`127.0.0.1:${port}`, `localhost:${port}`]), refused(true, /localhost: it resolves to (127\.0\.0\.1|::1)/));
});

test('an IP literal listed with its port is a deliberate allowance, even on loopback', async () => {
  const img = await open(`http://127.0.0.1:${port}/ok.png`, [`127.0.0.1:${port}`]);
  img.body.resume();
  assert.equal(img.format, 'png');
});

test('a RESULT_HOSTS entry without a port allows only ports 80 and 443', async () => {
  await assert.rejects(open(`http://127.0.0.1:${port}/ok.png`, ['127.0.0.1']), refused(true, /not in RESULT_HOSTS/));
  assert.ok(hostAllowed(new URL('https://v3.fal.media/x.png'), ['*.fal.media']));
  assert.ok(hostAllowed(new URL('http://fal.media/x.png'), ['fal.media']));
  assert.ok(!hostAllowed(new URL('https://v3.fal.media:8443/x.png'), ['*.fal.media']));
  assert.ok(hostAllowed(new URL('https://v3.fal.media:8443/x.png'), ['*.fal.media:8443']));
});

test('a wildcard never matches an IP literal', () => {
  assert.ok(!hostAllowed(new URL('http://127.0.0.1/x.png'), ['*.0.0.1']));
});

test('loopback, private, link-local, CGNAT, multicast and IPv4-mapped forms of them are not public addresses', () => {
  for (const a of ['127.0.0.1', '10.1.2.3', '172.16.0.1', '192.168.1.1', '169.254.169.254', '100.64.0.1', '0.0.0.0', '224.0.0.1', '::1', '::', 'fe80::1', 'fd00::1', '::ffff:127.0.0.1', '::ffff:7f00:1', '::ffff:a9fe:a9fe']) {
    assert.equal(isPublicAddress(a), false, a);
  }
  for (const a of ['93.184.216.34', '151.101.1.1', '2606:4700::1111', '::ffff:93.184.216.34']) assert.equal(isPublicAddress(a), true, a);
});
