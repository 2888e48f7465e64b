// The fal emulator spoken to by the real, unmodified @fal-ai/client (URLs rewritten from
// https://queue.fal.run by its requestMiddleware): queue protocol, validation, real images, signed
// webhooks with re-delivery, cancellation, and every fault option.
import assert from 'node:assert/strict';
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiError, createFalClient, ValidationError, type FalClient } from '@fal-ai/client';
import sharp from 'sharp';
import { verifyWebhookSignature, WEBHOOK_HEADERS } from '../src/core/webhookSignature.ts';
import { falCalls, startEmulator, type EmulatorOptions, type RunningEmulator } from '../src/emulator/index.ts';
import { backoffDelay, DEFAULT_WEBHOOK_RETRY } from '../src/emulator/webhooks.ts';
import { EMULATED_ERRORS } from '../src/emulator/errors.ts';
import { FAL_ERROR_TYPES } from '../src/core/falErrors.ts';

const ENDPOINT: string = 'fal-ai/flux-2-lora-gallery/face-to-full-portrait';
const APP_URL_PATH = '/fal-ai/flux-2-lora-gallery/requests/';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

interface PortraitOutput {
  images: { url: string; content_type: string; file_name: string; file_size: number; width: number; height: number }[];
  seed: number;
  prompt: string;
  has_nsfw_concepts: boolean[];
  timings: { inference: number };
}

interface WebhookBody {
  request_id: string;
  gateway_request_id: string;
  status: 'OK' | 'ERROR';
  payload: unknown;
  error: string | null;
}

// ---- fixtures -------------------------------------------------------------------------------

const cleanups: (() => Promise<unknown>)[] = [];
after(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

async function emulator(opts: EmulatorOptions = {}): Promise<RunningEmulator> {
  const emu = await startEmulator({ sizeScale: 0.25, latencyMs: { min: 5, max: 20 }, seed: 42, ...opts });
  cleanups.push(() => emu.close());
  return emu;
}

/** Answers 429/5xx by throwing, so the client's own retry loop (≥1 s backoff) stays out of the tests. */
class HttpStatusError extends Error {
  constructor(
    readonly status: number,
    readonly retryAfter: string | null,
  ) {
    super(`HTTP ${status}`);
  }
}
const strictFetch: typeof fetch = async (input, init) => {
  const res = await fetch(input, init);
  if (res.status === 429 || res.status >= 500) {
    await res.arrayBuffer();
    throw new HttpStatusError(res.status, res.headers.get('retry-after'));
  }
  return res;
};

function falFor(emu: RunningEmulator, credentials: string | (() => string | undefined) = 'test-key'): FalClient {
  return createFalClient({
    credentials,
    suppressLocalCredentialsWarning: true,
    fetch: strictFetch,
    requestMiddleware: async (req) => ({ ...req, url: req.url.replace('https://queue.fal.run', emu.url).replace('https://rest.fal.ai', emu.url) }),
  });
}

const faceFile = (n: number) => `examples/faces/face-${String(n).padStart(2, '0')}.png`;
const faceDataUri = async (n: number) => `data:image/png;base64,${(await readFile(faceFile(n))).toString('base64')}`;

/** Serves the sample faces over HTTP, as a bucket would. */
const faces = await (async () => {
  const server = createServer((req, res) => {
    const m = /^\/faces\/(face-\d\d\.png)$/.exec(req.url ?? '');
    readFile(`examples/faces/${m?.[1] ?? 'missing'}`).then(
      (data) => res.writeHead(200, { 'content-type': 'image/png', 'content-length': data.length }).end(data),
      () => res.writeHead(404).end(),
    );
  });
  return { url: await listen(server) };
})();

interface Delivery {
  url: string;
  headers: IncomingHttpHeaders;
  raw: Buffer;
  body: WebhookBody;
  at: number;
}

/** A webhook receiver that records every POST; `answer(n)` gives the status for the n-th (1-based). */
async function receiver(answer: (n: number) => number = () => 200) {
  const deliveries: Delivery[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      deliveries.push({ url: req.url ?? '', headers: req.headers, raw, body: JSON.parse(raw.toString('utf8')) as WebhookBody, at: Date.now() });
      res.writeHead(answer(deliveries.length)).end();
    });
  });
  const url = await listen(server);
  return {
    url,
    deliveries,
    async waitFor(n: number, timeoutMs = 5000): Promise<Delivery[]> {
      for (const start = Date.now(); deliveries.length < n; await sleep(10)) {
        if (Date.now() - start > timeoutMs) assert.fail(`expected ${n} webhook deliveries, got ${deliveries.length}`);
      }
      return deliveries;
    },
  };
}

async function waitDone(fal: FalClient, requestId: string) {
  return fal.queue.subscribeToStatus(ENDPOINT, { requestId, pollInterval: 10, logs: true });
}

async function jwksKey(emu: RunningEmulator): Promise<KeyObject> {
  const jwks = (await (await fetch(emu.jwksUrl)).json()) as { keys: Record<string, string>[] };
  return createPublicKey({ key: jwks.keys[0]!, format: 'jwk' });
}

function verifies(d: Delivery, key: KeyObject, raw = d.raw): boolean {
  const h = (name: string) => String(d.headers[name] ?? '');
  return verifyWebhookSignature(
    { requestId: h(WEBHOOK_HEADERS.requestId), userId: h(WEBHOOK_HEADERS.userId), timestamp: h(WEBHOOK_HEADERS.timestamp) },
    raw,
    h(WEBHOOK_HEADERS.signature),
    key,
  );
}

async function inspect(emu: RunningEmulator, id: string) {
  const res = await fetch(`${emu.url}/_emulator/requests/${id}`);
  assert.equal(res.status, 200);
  return (await res.json()) as { status: string; completedAt: number | null; webhookAttempts: { status?: number; error?: string }[]; input: unknown };
}

async function rejectsWith<T extends Error>(p: Promise<unknown>, type: new (...args: never[]) => T, check: (e: T) => void): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof type, `expected ${type.name}, got ${String(err)}`);
    check(err);
    return true;
  });
}

// ---- the protocol ---------------------------------------------------------------------------

test('submit → status → result: real images of the requested size and format, served from /files', async () => {
  const emu = await emulator();
  const fal = falFor(emu);
  const cases = [
    { input: { image_size: 'portrait_4_3', num_images: 2, seed: 7 }, width: 192, height: 256, format: 'png' },
    { input: { image_size: { width: 640, height: 960 }, output_format: 'jpeg', prompt: 'full body, suit' }, width: 160, height: 240, format: 'jpeg' },
    // No image_size: the face's own size (face-03 is 256×256), whatever sizeScale.
    { input: { output_format: 'webp', unknown_field: 'ignored like fal does' }, width: 256, height: 256, format: 'webp' },
  ];
  for (const c of cases) {
    const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [`${faces.url}/faces/face-03.png`], ...c.input } });
    assert.match(sub.request_id, UUID);
    assert.equal(sub.status, 'IN_QUEUE');
    const q = sub as unknown as Record<string, string>;
    assert.equal(q.response_url, `${emu.url}${APP_URL_PATH}${sub.request_id}`, 'no endpoint sub-path, like the client builds it');
    assert.equal(q.status_url, `${q.response_url}/status`);
    assert.equal(q.cancel_url, `${q.response_url}/cancel`);

    const done = await waitDone(fal, sub.request_id);
    assert.equal(done.status, 'COMPLETED');
    assert.ok(done.logs.some((l) => /completed/i.test(l.message)));
    const { data, requestId } = await fal.queue.result(ENDPOINT, { requestId: sub.request_id });
    assert.equal(requestId, sub.request_id);
    const out = data as PortraitOutput;
    const n = (c.input as { num_images?: number }).num_images ?? 1;
    assert.equal(out.images.length, n);
    assert.deepEqual(out.has_nsfw_concepts, Array(n).fill(false));
    assert.equal(out.prompt, (c.input as { prompt?: string }).prompt ?? 'Face to full portrait');
    if ('seed' in c.input) assert.equal(out.seed, c.input.seed);
    else assert.ok(Number.isFinite(out.seed) && out.seed >= 0);

    const bodies: Buffer[] = [];
    for (const img of out.images) {
      assert.match(img.url, new RegExp(`^${emu.url}/files/[0-9a-f]+/${img.file_name}$`));
      assert.deepEqual([img.width, img.height, img.content_type], [c.width, c.height, `image/${c.format}`]);
      const res = await fetch(img.url);
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), `image/${c.format}`);
      const body = Buffer.from(await res.arrayBuffer());
      assert.equal(Number(res.headers.get('content-length')), body.length);
      assert.equal(img.file_size, body.length);
      const meta = await sharp(body).metadata();
      assert.deepEqual([meta.width, meta.height, meta.format], [c.width, c.height, c.format]);
      bodies.push(body);
    }
    if (bodies.length === 2) assert.notDeepEqual(bodies[0], bodies[1], 'each image of a request differs');
    // A finished request cannot be cancelled.
    await rejectsWith(fal.queue.cancel(ENDPOINT, { requestId: sub.request_id }), ApiError, (e) => {
      assert.equal(e.status, 400);
      assert.deepEqual(e.body, { status: 'ALREADY_COMPLETED' });
    });
  }
  const stats = emu.stats();
  assert.deepEqual([stats.submits, stats.accepted, stats.completed, stats.fileGets], [3, 3, 3, 4]);
  assert.deepEqual(await (await fetch(`${emu.url}/_emulator/stats`)).json(), stats);
});

test('a result asked for too early answers 400 "still in progress"; status shows the queue', async () => {
  const emu = await emulator({ latencyMs: { min: 400, max: 400 }, slots: 1 });
  const fal = falFor(emu);
  const input = { image_urls: [await faceDataUri(1)] };
  const a = await fal.queue.submit(ENDPOINT, { input });
  const b = await fal.queue.submit(ENDPOINT, { input });
  const sa = await fal.queue.status(ENDPOINT, { requestId: a.request_id, logs: false });
  const sb = await fal.queue.status(ENDPOINT, { requestId: b.request_id, logs: false });
  assert.equal(sa.status, 'IN_PROGRESS');
  assert.equal(sb.status, 'IN_QUEUE');
  assert.equal((sb as { queue_position?: number }).queue_position, 0);
  const raw = await fetch(`${emu.url}${APP_URL_PATH}${b.request_id}/status`, { headers: { authorization: 'Key test-key' } });
  assert.equal(raw.status, 202, 'fal answers 202 until the request is completed');
  await rejectsWith(fal.queue.result(ENDPOINT, { requestId: b.request_id }), ApiError, (e) => {
    assert.equal(e.status, 400);
    assert.deepEqual(e.body, { detail: 'Request is still in progress' });
  });
  assert.equal((await waitDone(fal, b.request_id)).status, 'COMPLETED');
});

test('unknown request ids answer 404 for status, result and cancel', async () => {
  const emu = await emulator();
  const fal = falFor(emu);
  const requestId = '00000000-0000-4000-8000-000000000000';
  for (const call of [
    fal.queue.status(ENDPOINT, { requestId, logs: false }),
    fal.queue.result(ENDPOINT, { requestId }),
    fal.queue.cancel(ENDPOINT, { requestId }),
  ]) {
    await rejectsWith(call, ApiError, (e) => assert.equal(e.status, 404));
  }
});

test('401 without a key or with an unknown one, 403 for a forbidden key; nothing is accepted', async () => {
  const emu = await emulator({ apiKeys: ['test-key', 'locked-key'], forbiddenKeys: ['locked-key'] });
  const input = { image_urls: [await faceDataUri(1)] };
  const raw = await fetch(`${emu.url}/${ENDPOINT}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(input) });
  assert.equal(raw.status, 401);
  assert.match(((await raw.json()) as { detail: string }).detail, /authorization/i);
  await rejectsWith(falFor(emu, () => undefined).queue.submit(ENDPOINT, { input }), ApiError, (e) => assert.equal(e.status, 401));
  await rejectsWith(falFor(emu, 'other-key').queue.submit(ENDPOINT, { input }), ApiError, (e) => assert.equal(e.status, 401));
  await rejectsWith(falFor(emu, 'locked-key').queue.submit(ENDPOINT, { input }), ApiError, (e) => assert.equal(e.status, 403));
  const ok = await falFor(emu).queue.submit(ENDPOINT, { input });
  await rejectsWith(falFor(emu, () => undefined).queue.status(ENDPOINT, { requestId: ok.request_id, logs: false }), ApiError, (e) =>
    assert.equal(e.status, 401),
  );
  const stats = emu.stats();
  assert.deepEqual([stats.submits, stats.accepted, stats.unauthorized], [5, 1, 5]);
});

test('strict validation, like fal: a bad input is queued, takes a slot, then fails (COMPLETED, 422 result, ERROR webhook)', async () => {
  const emu = await emulator();
  const hooks = await receiver();
  const fal = falFor(emu);
  const face = await faceDataUri(1);
  const bad = { image_urls: [face], num_images: 9, guidance_scale: 'lots', output_format: 'gif', image_size: { width: 0, height: 512 } };
  const sub = await fal.queue.submit(ENDPOINT, { input: bad, webhookUrl: `${hooks.url}/h?run=r&row=bad` });
  assert.match(sub.request_id, UUID, 'accepted with a request id');
  const [d] = await hooks.waitFor(1);
  assert.deepEqual([d?.body.status, d?.body.error], ['ERROR', 'Invalid status code: 422']);
  const detail = (d?.body.payload as { detail: { loc: string[]; type: string; url: string }[] }).detail;
  const expected = [
    ['body.guidance_scale', 'float_parsing'],
    ['body.image_size.width', 'greater_than'],
    ['body.num_images', 'less_than_equal'],
    ['body.output_format', 'enum'],
  ];
  assert.deepEqual(detail.map((f) => [f.loc.join('.'), f.type]).sort(), expected);
  assert.ok(detail.every((f) => f.url.startsWith('https://errors.pydantic.dev/')));
  const status = await fal.queue.status(ENDPOINT, { requestId: sub.request_id, logs: false });
  assert.equal(status.status, 'COMPLETED');
  await rejectsWith(fal.queue.result(ENDPOINT, { requestId: sub.request_id }), ValidationError, (e) => {
    assert.equal(e.status, 422);
    assert.deepEqual(e.fieldErrors.map((f) => [f.loc.join('.'), f.type]).sort(), expected);
  });
  // A missing image_urls, too: fal's queue takes any JSON object.
  const none = await fal.queue.submit(ENDPOINT, { input: { prompt: 'no face' } });
  await waitDone(fal, none.request_id);
  await rejectsWith(fal.queue.result(ENDPOINT, { requestId: none.request_id }), ValidationError, (e) =>
    assert.deepEqual(e.fieldErrors.map((f) => [f.loc, f.type]), [[['body', 'image_urls'], 'missing']]),
  );
  // The schema is fal's, not the product's: sizes the product refuses (below 64) are fine here.
  const small = await fal.queue.submit(ENDPOINT, { input: { image_urls: [face], image_size: { width: 40, height: 48 } } });
  assert.equal((await waitDone(fal, small.request_id)).status, 'COMPLETED');
  const out = (await fal.queue.result(ENDPOINT, { requestId: small.request_id })).data as PortraitOutput;
  assert.deepEqual([out.images[0]?.width, out.images[0]?.height], [10, 12]);
  const stats = emu.stats();
  assert.deepEqual([stats.validationErrors, stats.accepted, stats.failedValidation, stats.failed, stats.billed], [0, 3, 2, 2, 1]);
});

test("validateAt 'submit' keeps the old kind emulator: 422 at submit, nothing queued", async () => {
  const emu = await emulator({ validateAt: 'submit' });
  const fal = falFor(emu);
  const face = await faceDataUri(1);
  await rejectsWith(fal.queue.submit(ENDPOINT, { input: { prompt: 'no face' } }), ValidationError, (e) => {
    assert.equal(e.status, 422);
    assert.deepEqual(
      e.fieldErrors.map((f) => [f.loc, f.type]),
      [[['body', 'image_urls'], 'missing']],
    );
  });
  await rejectsWith(fal.queue.submit(ENDPOINT, { input: { image_urls: [face], image_size: 'giant' } }), ValidationError, (e) => {
    const [err] = e.getFieldErrors('image_size');
    assert.equal(err?.type, 'enum');
    assert.match(err?.msg ?? '', /'square_hd'.*'landscape_16_9'/);
  });
  await rejectsWith(fal.queue.submit(ENDPOINT, { input: { image_urls: [] } }), ValidationError, (e) => assert.equal(e.fieldErrors[0]?.type, 'too_short'));
  const stats = emu.stats();
  assert.deepEqual([stats.validationErrors, stats.accepted], [3, 0]);
});

// ---- webhooks -------------------------------------------------------------------------------

test('the webhook is signed (verifies against the JWKS), keeps its query, and carries the output', async () => {
  const emu = await emulator({ userId: 'user-123' });
  const hooks = await receiver();
  const fal = falFor(emu);
  const jwks = (await (await fetch(emu.jwksUrl)).json()) as { keys: Record<string, string>[] };
  assert.equal(jwks.keys.length, 1);
  assert.deepEqual(
    [jwks.keys[0]!.kty, jwks.keys[0]!.crv, jwks.keys[0]!.use, jwks.keys[0]!.alg, typeof jwks.keys[0]!.kid, jwks.keys[0]!.x?.length],
    ['OKP', 'Ed25519', 'sig', 'EdDSA', 'string', 43],
  );
  const key = await jwksKey(emu);

  const webhookUrl = `${hooks.url}/fal/webhook?run=run-1&row=alice&attempt=1`;
  const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [`${faces.url}/faces/face-05.png`], seed: 3 }, webhookUrl });
  const [d] = await hooks.waitFor(1);
  assert.ok(d);
  assert.equal(d.url, '/fal/webhook?run=run-1&row=alice&attempt=1');
  assert.equal(d.headers['content-type'], 'application/json');
  assert.equal(d.headers[WEBHOOK_HEADERS.requestId], sub.request_id);
  assert.equal(d.headers[WEBHOOK_HEADERS.userId], 'user-123');
  assert.ok(Math.abs(Number(d.headers[WEBHOOK_HEADERS.timestamp]) - Date.now() / 1000) < 10);
  assert.ok(verifies(d, key), 'signature verifies with the published key');
  assert.ok(!verifies(d, key, Buffer.from(d.raw.toString().replace('"seed":3', '"seed":4'))), 'a changed body does not');

  assert.deepEqual([d.body.request_id, d.body.gateway_request_id, d.body.status, d.body.error], [sub.request_id, sub.request_id, 'OK', null]);
  const { data } = await fal.queue.result(ENDPOINT, { requestId: sub.request_id });
  assert.deepEqual(d.body.payload, data, 'the webhook carries what result returns');
  await sleep(100);
  const stats = emu.stats();
  assert.deepEqual([stats.webhooksSent, stats.webhooksDelivered, stats.webhookAttempts], [1, 1, 1]);
  assert.deepEqual(stats.acceptedByRow, { 'run-1/alice': 1 });
});

test('re-delivery with backoff until the receiver answers 2xx; each attempt freshly signed', async () => {
  const emu = await emulator({ webhookRetry: { baseDelayMs: 600, maxDelayMs: 5000 } });
  const hooks = await receiver((n) => (n <= 2 ? 500 : 200));
  const key = await jwksKey(emu);
  const sub = await falFor(emu).queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(2)] }, webhookUrl: `${hooks.url}/hook` });
  const ds = await hooks.waitFor(3);
  await sleep(700);
  assert.equal(ds.length, 3, 'no delivery after the 2xx');
  const [first, second, third] = ds as [Delivery, Delivery, Delivery];
  assert.ok(second.at - first.at >= 550, 'backoff before the 2nd attempt');
  assert.ok(third.at - second.at >= 1150, 'doubled before the 3rd');
  for (const d of ds) {
    assert.ok(verifies(d, key));
    assert.deepEqual(d.raw, first.raw, 'same body each time');
  }
  assert.ok(Number(third.headers[WEBHOOK_HEADERS.timestamp]) > Number(first.headers[WEBHOOK_HEADERS.timestamp]), 'fresh timestamp');
  assert.notEqual(third.headers[WEBHOOK_HEADERS.signature], first.headers[WEBHOOK_HEADERS.signature], 'fresh signature');
  const seen = await inspect(emu, sub.request_id);
  assert.deepEqual(
    seen.webhookAttempts.map((a) => a.status),
    [500, 500, 200],
  );
  const stats = emu.stats();
  assert.deepEqual([stats.webhooksSent, stats.webhooksDelivered, stats.webhookAttempts], [1, 1, 3]);
});

test('an unreachable receiver gets the configured number of attempts, then delivery gives up', async () => {
  const emu = await emulator({ webhookRetry: { attempts: 3, baseDelayMs: 20 } });
  const closed = createServer();
  const deadUrl = await listen(closed);
  await new Promise<void>((resolve) => closed.close(() => resolve()));
  const sub = await falFor(emu).queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(2)] }, webhookUrl: `${deadUrl}/hook` });
  for (let i = 0; i < 200 && emu.stats().webhookAttempts < 3; i++) await sleep(10);
  await sleep(150);
  const seen = await inspect(emu, sub.request_id);
  assert.equal(seen.webhookAttempts.length, 3);
  assert.ok(seen.webhookAttempts.every((a) => a.status === undefined && typeof a.error === 'string'));
  assert.deepEqual([emu.stats().webhooksSent, emu.stats().webhooksDelivered], [1, 0]);
});

// ---- failures in the model, sync mode, cancel ----------------------------------------------

test('an unreachable face fails the request: ERROR webhook, COMPLETED status with error, 422 result', async () => {
  const emu = await emulator();
  const hooks = await receiver();
  const fal = falFor(emu);
  const missing = `${faces.url}/faces/nobody.png`;
  const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [missing] }, webhookUrl: `${hooks.url}/hook?run=r&row=x` });
  const [d] = await hooks.waitFor(1);
  assert.equal(d?.body.status, 'ERROR');
  assert.equal(d?.body.error, 'Invalid status code: 422');
  const detail = (d?.body.payload as { detail: { loc: unknown[]; msg: string; type: string }[] }).detail;
  assert.deepEqual(detail[0]?.loc, ['body', 'image_urls', 0]);
  assert.equal(detail[0]?.type, 'file_download_error');
  assert.ok(detail[0]?.msg.includes(missing), 'the detail names the URL');

  const status = (await fal.queue.status(ENDPOINT, { requestId: sub.request_id, logs: false })) as { status: string; error?: string; error_type?: string };
  assert.equal(status.status, 'COMPLETED');
  assert.equal(status.error_type, 'file_download_error');
  assert.match(status.error ?? '', /nobody\.png.*404/);
  await rejectsWith(fal.queue.result(ENDPOINT, { requestId: sub.request_id }), ValidationError, (e) => {
    assert.equal(e.status, 422);
    assert.deepEqual(e.body, d?.body.payload);
  });
  const raw = await fetch(`${emu.url}${APP_URL_PATH}${sub.request_id}`, { headers: { authorization: 'Key test-key' } });
  assert.equal(raw.status, 422);
  assert.equal(raw.headers.get('x-fal-error-type'), 'file_download_error');

  // A face that downloads but is not an image.
  const junk = await fal.queue.submit(ENDPOINT, { input: { image_urls: ['data:image/png;base64,aGVsbG8gd29ybGQ='] } });
  const junkStatus = (await waitDone(fal, junk.request_id)) as { error_type?: string };
  assert.equal(junkStatus.error_type, 'image_load_error');
  assert.equal(emu.stats().failed, 2);
});

test('sync_mode returns the images as data URIs instead of /files URLs', async () => {
  const emu = await emulator();
  const fal = falFor(emu);
  const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(4)], sync_mode: true, output_format: 'webp', image_size: 'landscape_16_9' } });
  await waitDone(fal, sub.request_id);
  const out = (await fal.queue.result(ENDPOINT, { requestId: sub.request_id })).data as PortraitOutput;
  const url = out.images[0]?.url ?? '';
  assert.match(url, /^data:image\/webp;base64,/);
  const body = Buffer.from(url.slice(url.indexOf(',') + 1), 'base64');
  assert.equal(out.images[0]?.file_size, body.length);
  const meta = await sharp(body).metadata();
  assert.deepEqual([meta.width, meta.height, meta.format], [256, 144, 'webp']);
  assert.equal(emu.stats().fileGets, 0);
});

test('cancel: a queued request is removed; a running one whose runner stops ends without result or webhook', async () => {
  const emu = await emulator({ slots: 1, latencyMs: { min: 1000, max: 1000 }, runningCancelCompletesRate: 0 });
  const hooks = await receiver();
  const fal = falFor(emu);
  const input = { image_urls: [await faceDataUri(6)] };
  const running = await fal.queue.submit(ENDPOINT, { input, webhookUrl: `${hooks.url}/a` });
  const queued = await fal.queue.submit(ENDPOINT, { input, webhookUrl: `${hooks.url}/b` });
  assert.equal((await fal.queue.status(ENDPOINT, { requestId: queued.request_id, logs: false })).status, 'IN_QUEUE');
  await fal.queue.cancel(ENDPOINT, { requestId: queued.request_id });
  await fal.queue.cancel(ENDPOINT, { requestId: running.request_id });
  const raw = await fetch(`${emu.url}${APP_URL_PATH}${running.request_id}/cancel`, { method: 'PUT', headers: { authorization: 'Key test-key' } });
  assert.equal(raw.status, 400);
  assert.deepEqual(await raw.json(), { status: 'ALREADY_COMPLETED' });
  for (const { request_id: requestId } of [running, queued]) {
    const s = (await fal.queue.status(ENDPOINT, { requestId, logs: false })) as { status: string; error_type?: string };
    assert.deepEqual([s.status, s.error_type], ['COMPLETED', 'client_cancelled']);
    await rejectsWith(fal.queue.result(ENDPOINT, { requestId }), ApiError, (e) => {
      assert.equal(e.status, 499);
      assert.deepEqual(e.body, { detail: 'Request was cancelled by the client', error_type: 'client_cancelled' });
    });
  }
  // The slot is free at once: a new request completes well before the cancelled one would have.
  const next = await fal.queue.submit(ENDPOINT, { input, webhookUrl: `${hooks.url}/c` });
  const [d] = await hooks.waitFor(1, 3000);
  assert.equal(d?.body.request_id, next.request_id);
  await sleep(1100);
  assert.equal(hooks.deliveries.length, 1, 'no webhook for the cancelled requests');
  assert.deepEqual([emu.stats().canceled, emu.stats().completed, emu.stats().billed, emu.stats().cancelCalls], [2, 1, 1, 3]);
});

test('cancel of a running request is only a signal: by default the runner finishes, is billed and sends its webhook', async () => {
  const emu = await emulator({ slots: 1, latencyMs: { min: 300, max: 300 } });
  const hooks = await receiver();
  const fal = falFor(emu);
  const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(6)] }, webhookUrl: `${hooks.url}/a` });
  assert.equal((await fal.queue.status(ENDPOINT, { requestId: sub.request_id, logs: false })).status, 'IN_PROGRESS');
  await fal.queue.cancel(ENDPOINT, { requestId: sub.request_id });
  assert.equal((await fal.queue.status(ENDPOINT, { requestId: sub.request_id, logs: false })).status, 'IN_PROGRESS', 'still running');
  const [d] = await hooks.waitFor(1);
  assert.deepEqual([d?.body.request_id, d?.body.status], [sub.request_id, 'OK']);
  const { data } = await fal.queue.result(ENDPOINT, { requestId: sub.request_id });
  assert.equal((data as PortraitOutput).images.length, 1);
  const stats = emu.stats();
  assert.deepEqual([stats.canceled, stats.cancelIgnored, stats.completed, stats.billed], [0, 1, 1, 1]);
  assert.equal((await inspect(emu, sub.request_id)).status, 'COMPLETED');
});

// ---- slots, seeds, sizes, payload_error, logs, storage, private networks -----------------

test('slots: two requests run at once, the rest wait IN_QUEUE with real positions and 202; nothing is refused', async () => {
  const emu = await emulator({ latencyMs: { min: 300, max: 300 } });
  const fal = falFor(emu);
  const input = { image_urls: [await faceDataUri(2)] };
  const subs = [];
  for (let i = 0; i < 5; i++) subs.push(await fal.queue.submit(ENDPOINT, { input }));
  const statuses = [];
  for (const s of subs) statuses.push((await fal.queue.status(ENDPOINT, { requestId: s.request_id, logs: false })) as { status: string; queue_position?: number });
  assert.deepEqual(
    statuses.map((s) => [s.status, s.queue_position]),
    [
      ['IN_PROGRESS', undefined],
      ['IN_PROGRESS', undefined],
      ['IN_QUEUE', 0],
      ['IN_QUEUE', 1],
      ['IN_QUEUE', 2],
    ],
  );
  const raw = await fetch(`${emu.url}${APP_URL_PATH}${subs[4]!.request_id}/status?logs=1`, { headers: { authorization: 'Key test-key' } });
  assert.equal(raw.status, 202);
  const withLogs = (await raw.json()) as { logs?: { message: string }[] };
  assert.ok(withLogs.logs?.some((l) => /queued/i.test(l.message)), 'logs=1 adds the logs');
  const withoutLogs = (await fal.queue.status(ENDPOINT, { requestId: subs[4]!.request_id, logs: false })) as { logs?: unknown };
  assert.equal(withoutLogs.logs, undefined);
  for (const s of subs) assert.equal((await waitDone(fal, s.request_id)).status, 'COMPLETED');
  const stats = emu.stats();
  assert.deepEqual([stats.submits, stats.accepted, stats.rejectedByFault, stats.billed, stats.resultCalls], [5, 5, 0, 5, 0]);
  assert.equal(falCalls(stats), 5 + stats.statusCalls);
});

test('64-bit seeds: a given seed comes back with every digit; drawn seeds use the full unsigned 64-bit range', async () => {
  const emu = await emulator();
  const hooks = await receiver();
  const fal = falFor(emu);
  const face = await faceDataUri(3);
  // The client's JSON.stringify cannot write such a number: send the raw body, as any client could.
  const res = await fetch(`${emu.url}/${ENDPOINT}?fal_webhook=${encodeURIComponent(`${hooks.url}/h`)}`, {
    method: 'POST',
    headers: { authorization: 'Key k', 'content-type': 'application/json' },
    body: `{"image_urls":["${face}"],"seed":17454220438242315174}`,
  });
  const { request_id: requestId } = (await res.json()) as { request_id: string };
  const [d] = await hooks.waitFor(1);
  assert.match(d!.raw.toString(), /"seed":17454220438242315174[,}]/, 'the webhook carries the exact digits');
  const result = await fetch(`${emu.url}${APP_URL_PATH}${requestId}`, { headers: { authorization: 'Key k' } });
  assert.match(await result.text(), /"seed":17454220438242315174[,}]/, 'and so does the result');

  const drawn: bigint[] = [];
  for (let i = 0; i < 4; i++) {
    const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [face] } });
    await waitDone(fal, sub.request_id);
    const text = await (await fetch(`${emu.url}${APP_URL_PATH}${sub.request_id}`, { headers: { authorization: 'Key k' } })).text();
    drawn.push(BigInt(/"seed":(\d+)/.exec(text)![1]!));
  }
  assert.ok(drawn.every((x) => x >= 0n && x < 2n ** 64n));
  assert.ok(drawn.some((x) => x > 2n ** 53n), `beyond what a double holds: ${drawn}`);
  // Out of range: more than 64 bits.
  const over = await fal.queue.submit(ENDPOINT, { input: { image_urls: [face], seed: '18446744073709551616' } });
  await waitDone(fal, over.request_id);
  await rejectsWith(fal.queue.result(ENDPOINT, { requestId: over.request_id }), ValidationError, (e) => assert.equal(e.fieldErrors[0]?.type, 'less_than_equal'));
});

test("no image_size: the output has the face's own size; a preset is scaled by sizeScale", async () => {
  const emu = await emulator();
  const fal = falFor(emu);
  const face = await sharp({ create: { width: 120, height: 200, channels: 3, background: '#c96' } }).png().toBuffer();
  const faceUri = `data:image/png;base64,${face.toString('base64')}`;
  const sizes = [];
  for (const extra of [{}, { image_size: 'landscape_4_3' }]) {
    const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [faceUri], ...extra } });
    await waitDone(fal, sub.request_id);
    const out = (await fal.queue.result(ENDPOINT, { requestId: sub.request_id })).data as PortraitOutput;
    const meta = await sharp(Buffer.from(await (await fetch(out.images[0]!.url)).arrayBuffer())).metadata();
    sizes.push([out.images[0]!.width, out.images[0]!.height, meta.width, meta.height]);
  }
  assert.deepEqual(sizes, [
    [120, 200, 120, 200],
    [256, 192, 256, 192],
  ]);
});

test('a payload over maxWebhookPayloadBytes arrives as payload null + payload_error; result still has it', async () => {
  const emu = await emulator({ maxWebhookPayloadBytes: 200 });
  const hooks = await receiver();
  const fal = falFor(emu);
  const key = await jwksKey(emu);
  const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(4)], sync_mode: true }, webhookUrl: `${hooks.url}/h` });
  const [d] = await hooks.waitFor(1);
  const body = d!.body as WebhookBody & { payload_error?: string };
  assert.deepEqual([body.status, body.payload, body.error], ['OK', null, null]);
  assert.match(body.payload_error ?? '', /too large/i);
  assert.ok(verifies(d!, key));
  const { data } = await fal.queue.result(ENDPOINT, { requestId: sub.request_id });
  assert.match((data as PortraitOutput).images[0]!.url, /^data:image\/png;base64,/);
  assert.equal(emu.stats().webhookPayloadErrors, 1);
});

test("fal's webhook schedule: 10 attempts, exponential, within 2 hours; timeScale shrinks it", async () => {
  const gaps = Array.from({ length: DEFAULT_WEBHOOK_RETRY.attempts - 1 }, (_, i) => backoffDelay(DEFAULT_WEBHOOK_RETRY, i + 1));
  const total = gaps.reduce((a, b) => a + b, 0);
  assert.equal(DEFAULT_WEBHOOK_RETRY.attempts, 10);
  assert.ok(total <= 2 * 3600_000 && total > 1.5 * 3600_000, `span ${total} ms`);
  assert.ok(gaps.every((g, i) => i === 0 || g === 2 * gaps[i - 1]!), 'each gap doubles');

  const emu = await emulator({ timeScale: 0.0002 });
  const hooks = await receiver(() => 503);
  await falFor(emu).queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(2)] }, webhookUrl: `${hooks.url}/h` });
  const ds = await hooks.waitFor(10, 10_000);
  await sleep(300);
  assert.equal(hooks.deliveries.length, 10, 'gives up after 10');
  const seen = ds.map((d, i) => (i === 0 ? 0 : d.at - ds[i - 1]!.at));
  assert.ok(seen[9]! >= gaps[8]! * 0.0002 * 0.9, `the last gap is the longest (${seen})`);
  assert.deepEqual([emu.stats().webhookAttempts, emu.stats().webhooksDelivered], [10, 0]);
});

test('fal.storage.upload of the official client: initiate, PUT, then the file URL serves the bytes', async () => {
  const emu = await emulator();
  const fal = falFor(emu);
  const bytes = await readFile(faceFile(5));
  const url = await fal.storage.upload(new Blob([bytes], { type: 'image/png' }));
  assert.ok(url.startsWith(`${emu.url}/files/`), url);
  const res = await fetch(url);
  assert.equal(res.headers.get('content-type'), 'image/png');
  assert.deepEqual(Buffer.from(await res.arrayBuffer()), bytes);
  // Initiating needs the key, like fal.
  const anon = await fetch(`${emu.url}/storage/upload/initiate?storage_type=fal-cdn-v3`, { method: 'POST', body: '{}' });
  assert.equal(anon.status, 401);
  assert.deepEqual([emu.stats().storageInitiates, emu.stats().storageUploads], [1, 1], 'a refused initiate is not counted');
});

test('privateNetwork false: faces on private addresses and webhooks to them are refused; faces in fal storage work', async () => {
  const emu = await emulator({ privateNetwork: false, timeScale: 0.0001 });
  const hooks = await receiver();
  const fal = falFor(emu);
  const local = await fal.queue.submit(ENDPOINT, { input: { image_urls: [`${faces.url}/faces/face-01.png`] }, webhookUrl: `${hooks.url}/h` });
  await waitDone(fal, local.request_id);
  await rejectsWith(fal.queue.result(ENDPOINT, { requestId: local.request_id }), ValidationError, (e) => {
    assert.equal(e.fieldErrors[0]?.type, 'file_download_error');
    assert.match(e.fieldErrors[0]?.msg ?? '', /cannot reach.*127\.0\.0\.1/);
  });
  const uploaded = await fal.storage.upload(new Blob([await readFile(faceFile(1))], { type: 'image/png' }));
  const ok = await fal.queue.submit(ENDPOINT, { input: { image_urls: [uploaded] }, webhookUrl: `${hooks.url}/h` });
  assert.equal((await waitDone(fal, ok.request_id)).status, 'COMPLETED');
  assert.equal(((await fal.queue.result(ENDPOINT, { requestId: ok.request_id })).data as PortraitOutput).images.length, 1);
  for (let i = 0; i < 300 && (await inspect(emu, ok.request_id)).webhookAttempts.length < 10; i++) await sleep(10);
  const attempts = (await inspect(emu, ok.request_id)).webhookAttempts;
  assert.equal(attempts.length, 10);
  assert.ok(attempts.every((a) => a.status === undefined && /cannot reach the webhook URL/.test(a.error ?? '')));
  assert.equal(hooks.deliveries.length, 0, 'nothing reached the loopback receiver');
});

// ---- faults ---------------------------------------------------------------------------------

test('submitErrorRate 1: every submit is refused with 429 (Retry-After: 1) or 500/503, nothing created', async () => {
  const emu = await emulator({ faults: { submitErrorRate: 1 } });
  const fal = falFor(emu);
  const input = { image_urls: [await faceDataUri(1)] };
  const seen = new Set<number>();
  for (let i = 0; i < 12; i++) {
    await rejectsWith(fal.queue.submit(ENDPOINT, { input }), HttpStatusError, (e) => {
      assert.ok([429, 500, 503].includes(e.status), `status ${e.status}`);
      if (e.status === 429) assert.equal(e.retryAfter, '1');
      seen.add(e.status);
    });
  }
  assert.ok(seen.has(429) && (seen.has(500) || seen.has(503)), `both kinds seen: ${[...seen]}`);
  assert.deepEqual([emu.stats().rejectedByFault, emu.stats().accepted], [12, 0]);
  emu.setFaults({ submitErrorRate: 0 });
  assert.match((await fal.queue.submit(ENDPOINT, { input })).request_id, UUID);
});

test('the same seed makes the same fault decisions', async () => {
  const outcomes = async () => {
    const emu = await emulator({ seed: 1234, faults: { submitErrorRate: 0.5 } });
    const body = JSON.stringify({ image_urls: [await faceDataUri(1)] });
    const codes: number[] = [];
    for (let i = 0; i < 16; i++) {
      const res = await fetch(`${emu.url}/${ENDPOINT}`, { method: 'POST', headers: { authorization: 'Key k', 'content-type': 'application/json' }, body });
      await res.arrayBuffer();
      codes.push(res.status);
    }
    return codes;
  };
  const first = await outcomes();
  assert.ok(first.includes(200) && first.some((c) => c !== 200), `a mix: ${first}`);
  assert.deepEqual(await outcomes(), first);
});

test('lostRequestRate 1: accepted (and counted per row), then status 404 and no webhook', async () => {
  const emu = await emulator({ faults: { lostRequestRate: 1 } });
  const hooks = await receiver();
  const fal = falFor(emu);
  const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(7)] }, webhookUrl: `${hooks.url}/h?run=run-9&row=gus` });
  assert.match(sub.request_id, UUID);
  await sleep(150);
  await rejectsWith(fal.queue.status(ENDPOINT, { requestId: sub.request_id, logs: false }), ApiError, (e) => {
    assert.equal(e.status, 404);
    assert.deepEqual(e.body, { detail: 'Request not found' });
  });
  await rejectsWith(fal.queue.result(ENDPOINT, { requestId: sub.request_id }), ApiError, (e) => assert.equal(e.status, 404));
  assert.equal((await inspect(emu, sub.request_id)).status, 'LOST');
  assert.equal(hooks.deliveries.length, 0);
  const stats = emu.stats();
  assert.deepEqual([stats.accepted, stats.lost, stats.completed, stats.webhooksSent], [1, 1, 0, 0]);
  assert.deepEqual(stats.acceptedByRow, { 'run-9/gus': 1 });
});

test('modelErrorRate 1: ERROR webhook with a 500, status error, result 500', async () => {
  const emu = await emulator({ faults: { modelErrorRate: 1 } });
  const hooks = await receiver();
  const fal = falFor(emu);
  const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(8)] }, webhookUrl: `${hooks.url}/h` });
  const [d] = await hooks.waitFor(1);
  assert.deepEqual([d?.body.status, d?.body.error], ['ERROR', 'Invalid status code: 500']);
  assert.match(String((d?.body.payload as { detail: unknown }).detail), /model error/i);
  const s = (await fal.queue.status(ENDPOINT, { requestId: sub.request_id, logs: false })) as { status: string; error?: string; error_type?: string };
  assert.equal(s.status, 'COMPLETED');
  assert.match(s.error ?? '', /model error/i);
  await rejectsWith(fal.queue.result(ENDPOINT, { requestId: sub.request_id }), HttpStatusError, (e) => assert.equal(e.status, 500));
  assert.equal(emu.stats().failed, 1);
});

test('imageDownloadFailureRate 1: GETs of generated files answer 500', async () => {
  const emu = await emulator();
  const fal = falFor(emu);
  const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(9)] } });
  await waitDone(fal, sub.request_id);
  const url = ((await fal.queue.result(ENDPOINT, { requestId: sub.request_id })).data as PortraitOutput).images[0]!.url;
  emu.setFaults({ imageDownloadFailureRate: 1 });
  for (let i = 0; i < 3; i++) assert.equal((await fetch(url)).status, 500);
  emu.setFaults({ imageDownloadFailureRate: 0 });
  const ok = await fetch(url);
  assert.equal(ok.status, 200);
  assert.equal((await sharp(Buffer.from(await ok.arrayBuffer())).metadata()).format, 'png');
  assert.deepEqual([emu.stats().fileGets, emu.stats().fileFailures], [4, 3]);
});

test('webhookDuplicateRate 1: every webhook arrives twice, identical', async () => {
  const emu = await emulator({ faults: { webhookDuplicateRate: 1 } });
  const hooks = await receiver();
  const key = await jwksKey(emu);
  const sub = await falFor(emu).queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(10)] }, webhookUrl: `${hooks.url}/h?run=a&row=b` });
  const [a, b] = await hooks.waitFor(2);
  await sleep(200);
  assert.equal(hooks.deliveries.length, 2);
  assert.ok(a && b && verifies(a, key) && verifies(b, key));
  assert.deepEqual(a.raw, b.raw);
  assert.equal(a.body.request_id, sub.request_id);
  assert.deepEqual([emu.stats().webhooksDuplicated, emu.stats().webhooksSent, emu.stats().webhooksDelivered], [1, 2, 2]);
});

test('webhookDropRate 1: the request completes but no webhook is ever sent', async () => {
  const emu = await emulator({ faults: { webhookDropRate: 1 } });
  const hooks = await receiver();
  const fal = falFor(emu);
  const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(11)] }, webhookUrl: `${hooks.url}/h` });
  assert.equal((await waitDone(fal, sub.request_id)).status, 'COMPLETED');
  await sleep(200);
  assert.equal(hooks.deliveries.length, 0);
  assert.deepEqual([emu.stats().webhooksDropped, emu.stats().webhooksSent], [1, 0]);
});

test('ambiguousSubmitRate 1: fal accepts and runs the request, but the submit answer is lost', async () => {
  const emu = await emulator({ faults: { ambiguousSubmitRate: 1 } });
  const hooks = await receiver();
  // The client retries a failed connection on its own (each retry a new paid request), so this
  // client's fetch hides the error code, as the service's does.
  const fal = createFalClient({
    credentials: 'test-key',
    suppressLocalCredentialsWarning: true,
    fetch: (input, init) => fetch(input, init).catch((err: Error) => Promise.reject(new Error(`connection lost: ${err.message}`))),
    requestMiddleware: async (req) => ({ ...req, url: req.url.replace('https://queue.fal.run', emu.url) }),
  });
  await assert.rejects(
    fal.queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(3)] }, webhookUrl: `${hooks.url}/h?run=a&row=b` }),
    (err: Error) => !(err instanceof ApiError),
    'a lost connection, not an HTTP answer',
  );
  const [d] = await hooks.waitFor(1);
  assert.equal(d!.body.status, 'OK');
  const { status } = await inspect(emu, d!.body.request_id);
  assert.equal(status, 'COMPLETED');
  assert.deepEqual([emu.stats().accepted, emu.stats().answersLost, emu.stats().completed], [1, 1, 1]);
  assert.deepEqual(emu.stats().acceptedByRow, { 'a/b': 1 });
});

test('webhookDelayMs holds each webhook back', async () => {
  const emu = await emulator({ faults: { webhookDelayMs: { min: 400, max: 400 } } });
  const hooks = await receiver();
  const sub = await falFor(emu).queue.submit(ENDPOINT, { input: { image_urls: [await faceDataUri(12)] }, webhookUrl: `${hooks.url}/h` });
  const [d] = await hooks.waitFor(1);
  const { completedAt } = await inspect(emu, sub.request_id);
  assert.ok(completedAt !== null && d!.at - completedAt >= 380, `delivered ${d!.at - (completedAt ?? 0)} ms after completion`);
});

test('close() stops the server', async () => {
  const emu = await startEmulator({ sizeScale: 0.25 });
  await emu.close();
  await assert.rejects(fetch(emu.jwksUrl));
  await emu.close(); // idempotent
});

// ---- fal's error kinds, the start timeout, result expiry ----------------------------------------

/** The result call as fal answers it, headers included (the client keeps only the body). */
async function rawResult(emu: RunningEmulator, requestId: string) {
  const res = await fetch(`${emu.url}${APP_URL_PATH}${requestId}`, { headers: { authorization: 'Key test-key' } });
  return { status: res.status, headers: res.headers, body: (await res.json()) as Record<string, unknown> };
}

test("errorRates: every type of the product's error table fails its request with fal's status, body shape and headers", async () => {
  const emu = await emulator();
  const hooks = await receiver();
  const fal = falFor(emu);
  const face = await faceDataUri(3);
  const types = Object.keys(FAL_ERROR_TYPES) as (keyof typeof FAL_ERROR_TYPES)[];
  for (const [i, type] of types.entries()) {
    assert.ok(type in EMULATED_ERRORS, `the emulator plays ${type}`);
    const kind = FAL_ERROR_TYPES[type];
    emu.setFaults({ errorRates: { [type]: 1 } });
    const sub = await fal.queue.submit(ENDPOINT, { input: { image_urls: [face] }, webhookUrl: `${hooks.url}/h?n=${i}` });
    const d = (await hooks.waitFor(i + 1))[i]!;
    assert.deepEqual([d.body.request_id, d.body.status, d.body.error], [sub.request_id, 'ERROR', `Invalid status code: ${kind.status}`], type);
    const s = (await fal.queue.status(ENDPOINT, { requestId: sub.request_id, logs: false })) as { status: string; error_type?: string };
    assert.deepEqual([s.status, s.error_type], ['COMPLETED', type]);
    const r = await rawResult(emu, sub.request_id);
    assert.equal(r.status, kind.status, type);
    assert.equal(r.headers.get('x-fal-error-type'), type);
    assert.equal(r.headers.get('x-fal-retryable'), String(EMULATED_ERRORS[type].retryable), type);
    if (kind.shape === 'request') {
      assert.deepEqual(Object.keys(r.body).sort(), ['detail', 'error_type'], type);
      assert.equal(r.body.error_type, type);
      assert.equal(typeof r.body.detail, 'string');
      assert.deepEqual(d.body.payload, r.body, 'the webhook payload is the same body');
    } else {
      const [entry] = r.body.detail as { loc: unknown[]; msg: string; type: string; url: string }[];
      assert.deepEqual([entry!.type, entry!.url, typeof entry!.msg, Array.isArray(entry!.loc)], [type, `https://docs.fal.ai/errors#${type}`, 'string', true]);
      assert.deepEqual(d.body.payload, r.body);
    }
  }
  assert.deepEqual(Object.keys(emu.stats().errorsByType).sort(), [...types].sort());
  assert.equal(emu.stats().billed, 0);
});

test('X-Fal-Request-Timeout: a request still queued when it runs out ends 504 (X-Fal-Request-Timeout-Type: user); a started one runs on', async () => {
  const emu = await emulator({ slots: 1, latencyMs: { min: 2600, max: 2600 } });
  const hooks = await receiver();
  const fal = falFor(emu);
  const face = await faceDataUri(4);
  const first = await fal.queue.submit(ENDPOINT, { input: { image_urls: [face] }, webhookUrl: `${hooks.url}/a`, startTimeout: 2 });
  const second = await fal.queue.submit(ENDPOINT, { input: { image_urls: [face] }, webhookUrl: `${hooks.url}/b`, startTimeout: 2 });
  const [timedOut] = await hooks.waitFor(1);
  assert.equal(timedOut!.body.request_id, second.request_id, 'the queued one ends first, at its start timeout');
  assert.deepEqual([timedOut!.body.status, timedOut!.body.error], ['ERROR', 'Invalid status code: 504']);
  assert.equal((timedOut!.body.payload as { error_type: string }).error_type, 'request_timeout');
  const r = await rawResult(emu, second.request_id);
  assert.equal(r.status, 504);
  assert.equal(r.headers.get('x-fal-request-timeout-type'), 'user');
  assert.equal(r.headers.get('x-fal-retryable'), 'false');
  const [, done] = await hooks.waitFor(2);
  assert.deepEqual([done!.body.request_id, done!.body.status], [first.request_id, 'OK'], 'the started one was not cut short');
  assert.deepEqual([emu.stats().startTimeouts, emu.stats().billed], [1, 1]);
});

test('results expire as fal documents: payload storage (on by default) keeps them; X-Fal-Store-IO: 0 leaves the short window, then 404 while status says COMPLETED', async () => {
  const emu = await emulator({ resultRetention: { keptMs: 0, largeKeptMs: 0 } });
  const fal = falFor(emu);
  const face = await faceDataUri(5);
  const kept = await fal.queue.submit(ENDPOINT, { input: { image_urls: [face] } });
  const unstored = await fal.queue.submit(ENDPOINT, { input: { image_urls: [face] }, headers: { 'X-Fal-Store-IO': '0' } });
  await waitDone(fal, kept.request_id);
  await waitDone(fal, unstored.request_id);
  let r = await rawResult(emu, unstored.request_id);
  for (let i = 0; i < 100 && r.status !== 404; i++) r = await rawResult(emu, unstored.request_id);
  assert.equal(r.status, 404, 'the result outside payload storage expired');
  const s = (await fal.queue.status(ENDPOINT, { requestId: unstored.request_id, logs: false })) as { status: string };
  assert.equal(s.status, 'COMPLETED', 'the request itself is still known');
  assert.equal((await rawResult(emu, kept.request_id)).status, 200, 'payload storage keeps the other for 30 days');
  assert.ok(emu.stats().resultsExpired >= 1);
});
