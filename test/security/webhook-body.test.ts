// The receiver's body handling against senders who want memory: signature headers are checked before
// a byte of the body is read, compressed bodies are refused (never inflated), and only a few bodies are
// read at once (more get 503 + Retry-After so fal re-delivers). The emulator publishes the signing key's
// JWKS; the Express app runs on a real port.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { createLogger } from '../../src/core/logger.ts';
import { createSigningKey } from '../../src/emulator/keys.ts';
import { startEmulator, type RunningEmulator } from '../../src/emulator/index.ts';
import { createWebhookApp, type WebhookDelivery } from '../../src/webhook/app.ts';
import { JwksCache } from '../../src/webhook/jwks.ts';
import { newWebhookCounters } from '../../src/webhook/refusals.ts';
import { falBody, partialRequest, postSigned, signedHeaders, until } from './helpers.ts';

const key = createSigningKey();
const SLOTS = 2;
let emulator: RunningEmulator;
let server: Server;
let url: string;
const recorded: WebhookDelivery[] = [];
const counters = newWebhookCounters();

before(async () => {
  emulator = await startEmulator({ signingKey: key });
  const app = createWebhookApp({
    jwks: new JwksCache(emulator.jwksUrl),
    maxBodyBytes: 32 * 1024 * 1024,
    logger: createLogger('webhook-body-test', 'silent'),
    record: async (d) => void recorded.push(d),
    maxConcurrentBodyReads: SLOTS,
    counters,
  });
  server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/fal/webhook`;
});
after(async () => {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await emulator.close();
});
beforeEach(() => void (recorded.length = 0));

const body = (requestId: string, pad = 0) => falBody(requestId, 'OK', { images: [{ url: 'https://fal.media/x.png' }], pad: 'x'.repeat(pad) });

test('a gzip body (31 KB that inflates to 31 MiB), correctly signed over what was sent → 415, never inflated, nothing recorded', async () => {
  const zipped = gzipSync(Buffer.from(body('gz-1', 31 * 1024 * 1024)));
  assert.ok(zipped.length < 64 * 1024);
  const r = await postSigned(url, key, { requestId: 'gz-1', body: zipped }, { 'content-encoding': 'gzip' });
  assert.equal(r.status, 415);
  assert.match(r.error ?? '', /content-encoding gzip/);
  assert.equal(recorded.length, 0);
  assert.equal(counters.refused.encoding, 1);
});

test('missing or malformed signature headers are refused before the body is read', { timeout: 20_000 }, async () => {
  const raw = Buffer.from(body('h-1', 100_000));
  const good = signedHeaders(key, { requestId: 'h-1', body: raw });
  const cases: Record<string, string>[] = [
    { 'content-type': 'application/json' },
    { ...good, 'x-fal-webhook-signature': 'not-hex' },
    { ...good, 'x-fal-webhook-timestamp': '12' },
  ];
  for (const headers of cases) {
    // Only 10 bytes of the body are ever sent: an answer proves the receiver did not wait for the rest.
    const req = partialRequest(url, headers, raw, 10);
    const res = await req.response;
    req.abort();
    assert.equal(res.status, 401);
  }
  assert.equal(recorded.length, 0);
});

test(`at most ${SLOTS} bodies are read at once: the next sender gets 503 with Retry-After; after they finish, others are read again`, { timeout: 20_000 }, async () => {
  const slow = ['slow-1', 'slow-2'].map((id) => {
    const raw = Buffer.from(body(id, 50_000));
    return partialRequest(url, signedHeaders(key, { requestId: id, body: raw }), raw, 100);
  });
  const received = counters.received;
  // Both have their headers in and hold a slot while their bodies trickle.
  await until(() => counters.received >= received + 2, 'two slow senders in the receiver');
  const third = await fetch(url, { method: 'POST', headers: signedHeaders(key, { requestId: 'third', body: body('third') }), body: body('third') });
  assert.equal(third.status, 503);
  assert.match(third.headers.get('retry-after') ?? '', /^\d+$/);
  assert.equal(recorded.length, 0);
  for (const s of slow) s.finish();
  assert.deepEqual(await Promise.all(slow.map((s) => s.response.then((r) => r.status))), [200, 200]);
  assert.equal((await postSigned(url, key, { requestId: 'third', body: body('third') })).status, 200);
  assert.deepEqual(recorded.map((d) => d.requestId).sort(), ['slow-1', 'slow-2', 'third']);
  assert.equal(counters.refused.busy, 1);
});
