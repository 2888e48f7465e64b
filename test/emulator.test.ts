// The emulator speaks fal's queue protocol well enough for the unmodified @fal-ai/client: submit,
// status, result, cancel, 401/422 errors, signed webhooks that verify against its JWKS, re-delivery.
import assert from 'node:assert/strict';
import { createPublicKey } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { createFalClient, ValidationError, type FalClient } from '@fal-ai/client';
import sharp from 'sharp';
import { DEFAULT_ENDPOINT, FAL_QUEUE_HOST } from '../src/core/config.ts';
import { verifyWebhookSignature } from '../src/core/webhookSignature.ts';
import { startEmulator, type RunningEmulator } from '../src/emulator/index.ts';
import { faceDataUri } from './helpers/faces.ts';

let emu: RunningEmulator;
let hook: Server;
let hookUrl = '';
const deliveries: { headers: Record<string, string>; body: Buffer }[] = [];
let failFirst = 0;

const client = (key?: string): FalClient =>
  createFalClient({
    credentials: key,
    suppressLocalCredentialsWarning: true,
    requestMiddleware: async (req) => ({ ...req, url: req.url.replace(FAL_QUEUE_HOST, emu.url) }),
  });

before(async () => {
  emu = await startEmulator({ sizeScale: 0.25, latencyMs: { min: 10, max: 20 }, webhookRetry: { baseDelayMs: 50 } });
  hook = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      deliveries.push({ headers: req.headers as Record<string, string>, body: Buffer.concat(chunks) });
      if (failFirst > 0) {
        failFirst--;
        res.writeHead(500).end();
      } else res.writeHead(200).end('{}');
    });
  });
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r));
  hookUrl = `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook?run=R&row=K&attempt=1`;
});
after(async () => {
  await emu.close();
  await new Promise((r) => hook.close(r));
});

async function waitFor<T>(fn: () => T | undefined, ms = 10_000): Promise<T> {
  for (let i = 0; i < ms / 20; i++) {
    const v = fn();
    if (v !== undefined) return v;
    await sleep(20);
  }
  throw new Error('timed out');
}

test('submit → status → result gives real images of the requested size and format', async () => {
  const fal = client('k');
  const { request_id } = await fal.queue.submit(DEFAULT_ENDPOINT, {
    input: { image_urls: [await faceDataUri(1)], image_size: 'portrait_4_3', output_format: 'webp', num_images: 2, seed: 5 },
  });
  const status = await fal.queue.subscribeToStatus(DEFAULT_ENDPOINT, { requestId: request_id, pollInterval: 20 });
  assert.equal(status.status, 'COMPLETED');
  const { data } = await fal.queue.result(DEFAULT_ENDPOINT, { requestId: request_id });
  const out = data as { images: { url: string; width: number; height: number; content_type: string }[]; seed: number };
  assert.equal(out.images.length, 2);
  assert.equal(out.seed, 5);
  const img = await (await fetch(out.images[0]!.url)).arrayBuffer();
  const meta = await sharp(Buffer.from(img)).metadata();
  assert.deepEqual([meta.format, meta.width, meta.height], ['webp', 192, 256]);
  assert.equal(out.images[0]!.content_type, 'image/webp');
});

test('401 without a key; 422 ValidationError for missing image_urls and bad enums', async () => {
  await assert.rejects(client(undefined).queue.submit(DEFAULT_ENDPOINT, { input: { image_urls: ['x'] } }), (e: { status?: number }) => e.status === 401);
  await assert.rejects(client('k').queue.submit('fal-ai/any-model', { input: { prompt: 'no face' } }), (e: unknown) => {
    assert.ok(e instanceof ValidationError);
    assert.equal(e.getFieldErrors('image_urls').length, 1);
    return true;
  });
  await assert.rejects(client('k').queue.submit('fal-ai/any-model', { input: { image_urls: ['x'], output_format: 'gif' } }), (e: unknown) => e instanceof ValidationError && e.status === 422);
});

test('webhooks are signed with a key from the JWKS, keep our query, and are re-delivered after a 500', async () => {
  deliveries.length = 0;
  failFirst = 1;
  const { request_id } = await client('k').queue.submit(DEFAULT_ENDPOINT, { input: { image_urls: [await faceDataUri(2)] }, webhookUrl: hookUrl });
  await waitFor(() => (deliveries.length >= 2 ? true : undefined));
  const jwks = (await (await fetch(emu.jwksUrl)).json()) as { keys: Record<string, string>[] };
  const key = createPublicKey({ key: jwks.keys[0]!, format: 'jwk' });
  for (const d of deliveries) {
    const fields = { requestId: d.headers['x-fal-webhook-request-id']!, userId: d.headers['x-fal-webhook-user-id']!, timestamp: d.headers['x-fal-webhook-timestamp']! };
    assert.equal(fields.requestId, request_id);
    assert.ok(verifyWebhookSignature(fields, d.body, d.headers['x-fal-webhook-signature']!, key));
    const body = JSON.parse(d.body.toString()) as { status: string; request_id: string; payload: { images: unknown[] } };
    assert.equal(body.status, 'OK');
    assert.equal(body.payload.images.length, 1);
  }
  assert.deepEqual(emu.stats().acceptedByRow, { 'R/K': 1 });
});

test('an unreachable face ends the request in ERROR: webhook, status error, result error status', async () => {
  deliveries.length = 0;
  const fal = client('k');
  const { request_id } = await fal.queue.submit(DEFAULT_ENDPOINT, { input: { image_urls: ['http://127.0.0.1:9/nope.png'] }, webhookUrl: hookUrl });
  await waitFor(() => (deliveries.length ? true : undefined));
  const body = JSON.parse(deliveries[0]!.body.toString()) as { status: string; error: string };
  assert.equal(body.status, 'ERROR');
  assert.match(body.error, /422/);
  const status = (await fal.queue.status(DEFAULT_ENDPOINT, { requestId: request_id })) as { status: string; error?: string };
  assert.equal(status.status, 'COMPLETED');
  assert.match(status.error!, /Failed to load image/);
  await assert.rejects(fal.queue.result(DEFAULT_ENDPOINT, { requestId: request_id }), (e: { status?: number }) => e.status === 422);
});

test('sync_mode returns data URIs; cancel stops a queued request; unknown ids are 404', async () => {
  const fal = client('k');
  const { request_id } = await fal.queue.submit(DEFAULT_ENDPOINT, { input: { image_urls: [await faceDataUri(3)], sync_mode: true } });
  await fal.queue.subscribeToStatus(DEFAULT_ENDPOINT, { requestId: request_id, pollInterval: 20 });
  const { data } = await fal.queue.result(DEFAULT_ENDPOINT, { requestId: request_id });
  assert.match((data as { images: { url: string }[] }).images[0]!.url, /^data:image\/png;base64,/);
  await assert.rejects(fal.queue.status(DEFAULT_ENDPOINT, { requestId: '00000000-0000-0000-0000-000000000000' }), (e: { status?: number }) => e.status === 404);
  const slow = await startEmulator({ latencyMs: { min: 5000, max: 5000 }, runners: 1 });
  try {
    const c = createFalClient({ credentials: 'k', requestMiddleware: async (r) => ({ ...r, url: r.url.replace(FAL_QUEUE_HOST, slow.url) }) });
    await c.queue.submit(DEFAULT_ENDPOINT, { input: { image_urls: [await faceDataUri(4)] } });
    const second = await c.queue.submit(DEFAULT_ENDPOINT, { input: { image_urls: [await faceDataUri(4)] } });
    await c.queue.cancel(DEFAULT_ENDPOINT, { requestId: second.request_id });
    assert.equal(slow.stats().canceled, 1);
  } finally {
    await slow.close();
  }
});

test('faults: lost requests are 404, file downloads fail, duplicates are sent twice', async () => {
  const fal = client('k');
  emu.setFaults({ lostRequestRate: 1 });
  const lost = await fal.queue.submit(DEFAULT_ENDPOINT, { input: { image_urls: [await faceDataUri(5)] } });
  emu.setFaults({ lostRequestRate: 0, imageDownloadFailureRate: 1, webhookDuplicateRate: 1 });
  await assert.rejects(fal.queue.status(DEFAULT_ENDPOINT, { requestId: lost.request_id }), (e: { status?: number }) => e.status === 404);
  deliveries.length = 0;
  await fal.queue.submit(DEFAULT_ENDPOINT, { input: { image_urls: [await faceDataUri(6)] }, webhookUrl: hookUrl });
  await waitFor(() => (deliveries.length >= 2 ? true : undefined));
  const url = (JSON.parse(deliveries[0]!.body.toString()) as { payload: { images: { url: string }[] } }).payload.images[0]!.url;
  assert.equal((await fetch(url)).status, 500);
  emu.setFaults({ imageDownloadFailureRate: 0, webhookDuplicateRate: 0 });
  assert.equal((await fetch(url)).status, 200);
});
