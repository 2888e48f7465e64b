// The receiver refuses forged, stale, tampered, mismatched, malformed and oversized webhooks and
// stores nothing for them; a valid one is recorded once before 200; a rotated key is picked up.
import assert from 'node:assert/strict';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, test } from 'node:test';
import { createLogger } from '../src/core/logger.ts';
import { signWebhook } from '../src/core/webhookSignature.ts';
import { createWebhookApp, type WebhookDelivery } from '../src/webhook/app.ts';
import { JwksCache } from '../src/webhook/jwks.ts';

const keyPair = () => generateKeyPairSync('ed25519');
let current = keyPair();
let jwksServer: Server;
let jwksFetches = 0;
let app: Server;
let url = '';
let jwks: JwksCache;
let recorded: WebhookDelivery[] = [];
let failRecord = false;
const LIMIT = 4096;

before(async () => {
  jwksServer = createServer((_req, res) => {
    jwksFetches++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: [{ ...current.publicKey.export({ format: 'jwk' }), kid: 'k', use: 'sig', alg: 'EdDSA' }] }));
  });
  await new Promise<void>((r) => jwksServer.listen(0, '127.0.0.1', r));
  jwks = new JwksCache(`http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks`, { minRefreshIntervalMs: 500 });
  const express = createWebhookApp({
    jwks,
    maxBodyBytes: LIMIT,
    logger: createLogger('test', 'silent'),
    record: async (d) => {
      if (failRecord) throw new Error('redis down');
      recorded.push(d);
    },
  });
  app = await new Promise<Server>((r) => {
    const s = express.listen(0, '127.0.0.1', () => r(s));
  });
  url = `http://127.0.0.1:${(app.address() as AddressInfo).port}`;
});
after(async () => {
  await new Promise((r) => app.close(r));
  await new Promise((r) => jwksServer.close(r));
});
beforeEach(() => {
  recorded = [];
  failRecord = false;
});

function signed(body: string, opts: { key?: KeyObject; requestId?: string; ts?: number; sigBody?: string } = {}) {
  const requestId = opts.requestId ?? 'req-1';
  const timestamp = String(opts.ts ?? Math.floor(Date.now() / 1000));
  const fields = { requestId, userId: 'user-1', timestamp };
  return {
    'content-type': 'application/json',
    'x-fal-webhook-request-id': requestId,
    'x-fal-webhook-user-id': 'user-1',
    'x-fal-webhook-timestamp': timestamp,
    'x-fal-webhook-signature': signWebhook(fields, Buffer.from(opts.sigBody ?? body), opts.key ?? current.privateKey),
  };
}
const ok = JSON.stringify({ request_id: 'req-1', gateway_request_id: 'req-1', status: 'OK', payload: { images: [] }, error: null });
const post = (body: string, headers: Record<string, string>, query = '?run=r1&row=a&attempt=2') =>
  fetch(`${url}/fal/webhook${query}`, { method: 'POST', headers, body });

test('a valid webhook is recorded once, with the query, before 200', async () => {
  const res = await post(ok, signed(ok));
  assert.equal(res.status, 200);
  assert.equal(recorded.length, 1);
  assert.equal(recorded[0]!.requestId, 'req-1');
  assert.equal(recorded[0]!.body.status, 'OK');
  assert.deepEqual(recorded[0]!.query, { run: 'r1', row: 'a', attempt: '2' });
});

test('forged, stale, future, tampered, mismatched and unsigned webhooks get 401 and store nothing', async () => {
  const now = Math.floor(Date.now() / 1000);
  const other = JSON.stringify({ request_id: 'req-2', status: 'OK', payload: {} });
  const cases: [string, Record<string, string>][] = [
    ['forged', signed(ok, { key: keyPair().privateKey })],
    ['stale', signed(ok, { ts: now - 301 })],
    ['future', signed(ok, { ts: now + 301 })],
    ['tampered', signed(ok, { sigBody: ok.replace('OK', 'ERROR') })],
    ['mismatch', signed(other, { requestId: 'req-1' })],
    ['unsigned', { 'content-type': 'application/json' }],
  ];
  for (const [name, headers] of cases) {
    const body = name === 'mismatch' ? other : ok;
    const res = await post(body, headers);
    assert.equal(res.status, 401, name);
  }
  assert.equal(recorded.length, 0);
});

test('signed but malformed JSON → 400; oversized → 413 (announced or not); nothing stored', async () => {
  const bad = '{"request_id": "req-1", ';
  assert.equal((await post(bad, signed(bad))).status, 400);
  const notFal = JSON.stringify({ request_id: 'req-1', status: 'MAYBE' });
  assert.equal((await post(notFal, signed(notFal))).status, 400);
  const big = JSON.stringify({ request_id: 'req-1', status: 'OK', payload: 'x'.repeat(LIMIT) });
  assert.equal((await post(big, signed(big))).status, 413);
  const chunked = new ReadableStream({
    start(c) {
      c.enqueue(new TextEncoder().encode(big));
      c.close();
    },
  });
  const res = await fetch(`${url}/fal/webhook`, { method: 'POST', headers: signed(big), body: chunked, duplex: 'half' } as RequestInit);
  assert.equal(res.status, 413);
  assert.equal(recorded.length, 0);
});

test('a failure to record answers 503 so fal re-delivers', async () => {
  failRecord = true;
  assert.equal((await post(ok, signed(ok))).status, 503);
});

test('a rotated key is fetched once; a flood of forgeries does not hammer the JWKS', async () => {
  await new Promise((r) => setTimeout(r, 600));
  current = keyPair();
  const before = jwksFetches;
  assert.equal((await post(ok, signed(ok))).status, 200);
  assert.equal(jwksFetches, before + 1);
  const forged = signed(ok, { key: keyPair().privateKey });
  for (let i = 0; i < 20; i++) assert.equal((await post(ok, forged)).status, 401);
  assert.equal(jwksFetches, before + 1, 'no refetch within the minimum interval');
});

test('healthz and unknown routes answer JSON', async () => {
  assert.equal((await fetch(`${url}/healthz`)).status, 200);
  const res = await fetch(`${url}/nope`);
  assert.equal(res.status, 404);
  assert.deepEqual(await res.json(), { error: 'not found' });
});
