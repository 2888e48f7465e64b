// The receiver's limits under abuse: a body-read slot is given back on every way a request can end
// (recorded, oversized, stalled, aborted, forged, malformed, too deep, refused by the record step,
// Redis failing, no signing keys), so strangers sending bodies that never verify cannot make it answer
// 503 to fal's real webhooks; nesting is bounded exactly at MAX_JSON_DEPTH, brackets inside strings not
// counted; only identity bodies are read. The emulator's JWKS and signing key, real HTTP on loopback
// (no Redis: this file is fast, for the mutation runs); the same abuse against the service's own
// receiver on the full stack is in webhook-service.test.ts.
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { createLogger } from '../src/core/logger.ts';
import { createSigningKey } from '../src/emulator/keys.ts';
import { startEmulator, type RunningEmulator } from '../src/emulator/index.ts';
import { createWebhookApp, MAX_JSON_DEPTH, parseFalWebhookBody, type WebhookAppOptions, type WebhookDelivery } from '../src/webhook/app.ts';
import { jsonNestsDeeperThan } from '../src/webhook/body.ts';
import { JwksCache } from '../src/webhook/jwks.ts';
import { newWebhookCounters, WebhookRefused, type WebhookCounters } from '../src/webhook/refusals.ts';
import { freePort } from '../src/local/ports.ts';
import { falBody, partialRequest, signedHeaders, until } from './security/helpers.ts';

const key = createSigningKey();
const stranger = createSigningKey();
const SLOTS = 2;
const LIMIT = 8 * 1024;
/** Each abuse is repeated past the number of slots: one leaked slot per request would use them all up. */
const ROUNDS = SLOTS + 2;

let emulator: RunningEmulator;

interface Receiver {
  url: string;
  counters: WebhookCounters;
  recorded: WebhookDelivery[];
  /** What the record step does next: record, throw (Redis down), or refuse (not ours). */
  mode: { record: 'ok' | 'throw' | 'refuse' };
  close(): Promise<void>;
}

async function startReceiver(jwksUrl: string, extra: Partial<WebhookAppOptions> = {}): Promise<Receiver> {
  const counters = newWebhookCounters();
  const recorded: WebhookDelivery[] = [];
  const mode: Receiver['mode'] = { record: 'ok' };
  const app = createWebhookApp({
    jwks: new JwksCache(jwksUrl),
    maxBodyBytes: LIMIT,
    logger: createLogger('webhook-limits-test', 'silent'),
    maxConcurrentBodyReads: SLOTS,
    bodyTimeoutMs: 300,
    counters,
    record: async (d) => {
      if (mode.record === 'throw') throw new Error('redis down');
      if (mode.record === 'refuse') throw new WebhookRefused(403, 'unplaceable', 'not ours');
      recorded.push(d);
    },
    ...extra,
  });
  const server: Server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/fal/webhook`,
    counters,
    recorded,
    mode,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const body = (requestId: string, pad = 0) => falBody(requestId, 'OK', { images: [{ url: 'https://fal.media/x.png' }], pad: 'x'.repeat(pad) });
/** Signature headers of the right shape whose signature verifies under no key. */
const unsignedHeaders = (requestId: string) => ({
  ...signedHeaders(stranger, { requestId, body: '' }),
  'x-fal-webhook-signature': randomBytes(64).toString('hex'),
});

async function post(url: string, headers: Record<string, string>, data: string | Buffer) {
  const res = await fetch(url, { method: 'POST', headers, body: data });
  return { status: res.status, error: ((await res.json().catch(() => ({}))) as { error?: string }).error ?? '' };
}

/** A body sent in pieces without Content-Length (chunked): the receiver only learns its size by reading. */
function postChunked(url: string, headers: Record<string, string>, data: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { ...headers, 'transfer-encoding': 'chunked' } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'ECONNRESET' || (err as NodeJS.ErrnoException).code === 'EPIPE' ? undefined : reject(err)));
    for (let i = 0; i < data.length; i += 1024) req.write(data.subarray(i, i + 1024));
    req.end();
  });
}

before(async () => {
  emulator = await startEmulator({ signingKey: key });
});
after(() => emulator.close());

describe('a body-read slot is given back whichever way a request ends', () => {
  let rx: Receiver;
  before(async () => {
    rx = await startReceiver(emulator.jwksUrl);
  });
  after(() => rx.close());

  /** After an abuse: fal's real webhooks are still read (no 503), SLOTS of them at once. */
  async function stillReceives(after: string) {
    const busy = rx.counters.refused.busy;
    const ids = Array.from({ length: SLOTS }, () => randomUUID());
    const statuses = await Promise.all(ids.map((id) => post(rx.url, signedHeaders(key, { requestId: id, body: body(id) }), body(id)).then((r) => r.status)));
    assert.deepEqual(statuses, ids.map(() => 200), `after ${after}: fal's webhooks are answered 200`);
    assert.equal(rx.counters.refused.busy, busy, `after ${after}: nothing refused as busy`);
    for (const id of ids) assert.ok(rx.recorded.some((d) => d.requestId === id), `after ${after}: ${id} recorded`);
  }

  test('recorded webhooks', async () => {
    for (let i = 0; i < ROUNDS; i++) {
      const id = randomUUID();
      assert.equal((await post(rx.url, signedHeaders(key, { requestId: id, body: body(id) }), body(id))).status, 200);
    }
    await stillReceives('recorded webhooks');
  });

  test('oversized bodies without a valid signature, sent chunked (their size learnt only by reading)', async () => {
    const big = Buffer.from(body('big', LIMIT));
    const before = rx.counters.refused.too_large;
    for (let i = 0; i < ROUNDS; i++) assert.equal(await postChunked(rx.url, unsignedHeaders('big'), big), 413);
    assert.equal(rx.counters.refused.too_large - before, ROUNDS);
    await stillReceives('oversized bodies');
  });

  test('oversized bodies announced by Content-Length are refused before a slot is taken', async () => {
    const big = Buffer.from(body('big', LIMIT));
    for (let i = 0; i < ROUNDS; i++) {
      // Only the headers and 10 bytes: an answer proves nothing more was waited for.
      const req = partialRequest(rx.url, unsignedHeaders('big'), big, 10);
      const res = await req.response;
      req.abort();
      assert.equal(res.status, 413);
    }
    await stillReceives('announced oversized bodies');
  });

  test('stalled bodies (408 once the body timeout passes)', async () => {
    const raw = Buffer.from(body('slow', 100));
    const before = rx.counters.refused.body;
    for (let i = 0; i < ROUNDS; i++) {
      const req = partialRequest(rx.url, unsignedHeaders('slow'), raw, 10);
      const res = await req.response;
      req.abort();
      assert.equal(res.status, 408);
    }
    assert.equal(rx.counters.refused.body - before, ROUNDS);
    await stillReceives('stalled bodies');
  });

  test('bodies whose sender hangs up half way', async () => {
    const raw = Buffer.from(body('gone', 100));
    const before = rx.counters.refused.body;
    for (let i = 0; i < ROUNDS; i++) {
      const received = rx.counters.received;
      const req = partialRequest(rx.url, unsignedHeaders('gone'), raw, 10);
      await until(() => rx.counters.received > received, 'the receiver reading the body');
      req.abort();
      await until(() => rx.counters.refused.body - before > i, `hang-up ${i + 1} seen by the receiver`);
    }
    await stillReceives('hang-ups');
  });

  test('complete bodies whose signature does not verify, or signed by another key', async () => {
    for (let i = 0; i < ROUNDS; i++) {
      const id = randomUUID();
      assert.equal((await post(rx.url, unsignedHeaders(id), body(id))).status, 401);
      assert.equal((await post(rx.url, signedHeaders(stranger, { requestId: id, body: body(id) }), body(id))).status, 401);
    }
    await stillReceives('forged bodies');
  });

  test('signed bodies that are not fal webhooks, nest too deeply, or name another request', async () => {
    const deep = `{"request_id":"d","status":"OK","payload":${'['.repeat(100)}${']'.repeat(100)}}`;
    for (let i = 0; i < ROUNDS; i++) {
      assert.equal((await post(rx.url, signedHeaders(key, { requestId: 'm', body: '{"request_id":' }), '{"request_id":')).status, 400);
      assert.equal((await post(rx.url, signedHeaders(key, { requestId: 'd', body: deep }), deep)).status, 422);
      assert.equal((await post(rx.url, signedHeaders(key, { requestId: 'other', body: body('x') }), body('x'))).status, 401);
    }
    await stillReceives('malformed bodies');
  });

  test('webhooks the record step refuses (not ours) or cannot store (Redis down)', async () => {
    for (const mode of ['refuse', 'throw'] as const) {
      rx.mode.record = mode;
      try {
        for (let i = 0; i < ROUNDS; i++) {
          const id = randomUUID();
          assert.equal((await post(rx.url, signedHeaders(key, { requestId: id, body: body(id) }), body(id))).status, mode === 'refuse' ? 403 : 503);
        }
      } finally {
        rx.mode.record = 'ok';
      }
      await stillReceives(`record step: ${mode}`);
    }
  });

  test('no signing key can be loaded (503): the slot is back once keys can be', async () => {
    const port = await freePort(); // nothing listens there
    const noKeys = await startReceiver(`http://127.0.0.1:${port}/.well-known/jwks.json`);
    try {
      for (let i = 0; i < ROUNDS; i++) {
        const id = randomUUID();
        const r = await post(noKeys.url, signedHeaders(key, { requestId: id, body: body(id) }), body(id));
        assert.equal(r.status, 503);
        assert.match(r.error, /cannot verify signatures/);
      }
      assert.equal(noKeys.counters.refused.busy, 0, 'refused for the keys, never as busy');
    } finally {
      await noKeys.close();
    }
  });
});

describe('nesting and encodings', () => {
  let rx: Receiver;
  before(async () => {
    rx = await startReceiver(emulator.jwksUrl);
  });
  after(() => rx.close());

  const nested = (levels: number, inner = '1') => `${'['.repeat(levels)}${inner}${']'.repeat(levels)}`;

  test(`nesting: exactly ${MAX_JSON_DEPTH} levels are recorded, one more is refused 422`, async () => {
    // The body object is the first level.
    for (const [levels, status] of [
      [MAX_JSON_DEPTH - 1, 200],
      [MAX_JSON_DEPTH, 422],
    ] as const) {
      const id = randomUUID();
      const b = `{"request_id":"${id}","status":"OK","payload":${nested(levels)}}`;
      const r = await post(rx.url, signedHeaders(key, { requestId: id, body: b }), b);
      assert.equal(r.status, status, `${levels + 1} levels`);
      if (status === 422) assert.match(r.error, new RegExp(`nests deeper than ${MAX_JSON_DEPTH} levels`));
    }
    assert.equal(rx.counters.refused.too_deep, 1);
  });

  test('brackets inside strings are not nesting, whatever the escapes before them', async () => {
    for (const inner of ['"[[[["', '"\\"[[[["', '"\\\\"', '"a\\\\\\"{{{{"']) {
      const text = `{"s":${inner.replace('[[[[', '['.repeat(100)).replace('{{{{', '{'.repeat(100))}}`;
      assert.doesNotThrow(() => JSON.parse(text), text);
      assert.equal(jsonNestsDeeperThan(Buffer.from(text), 2), false, text);
    }
    // After an escaped backslash the string ends: what follows is nesting again.
    assert.equal(jsonNestsDeeperThan(Buffer.from(`{"s":"\\\\",${'"x":['.repeat(3)}1]]]}`), 3), true);
    assert.equal(jsonNestsDeeperThan(Buffer.from(`{"a":[1],"b":[2],"c":{"d":[3]}}`), 3), false, 'siblings do not add up');
    assert.equal(jsonNestsDeeperThan(Buffer.from(`{"c":{"d":[3]}}`), 2), true);
    // Through the receiver: a prompt full of brackets is recorded.
    const id = randomUUID();
    const b = falBody(id, 'OK', { prompt: `\\" ${'['.repeat(500)}`, images: [] });
    assert.equal((await post(rx.url, signedHeaders(key, { requestId: id, body: b }), b)).status, 200);
  });

  test('only identity bodies: every other Content-Encoding is refused 415 before reading, named in the answer', async () => {
    const id = randomUUID();
    const b = body(id);
    for (const encoding of ['gzip', 'GZIP', 'deflate', 'br', 'x-gzip', 'identity, gzip', 'compress']) {
      const r = await post(rx.url, { ...signedHeaders(key, { requestId: id, body: b }), 'content-encoding': encoding }, b);
      assert.equal(r.status, 415, encoding);
      assert.match(r.error, new RegExp(`content-encoding ${encoding.toLowerCase()} is not accepted`));
    }
    for (const encoding of ['identity', 'Identity', ' identity ']) {
      const r = await post(rx.url, { ...signedHeaders(key, { requestId: id, body: b }), 'content-encoding': encoding }, b);
      assert.equal(r.status, 200, `${JSON.stringify(encoding)} is no encoding`);
    }
    assert.equal(rx.counters.refused.encoding, 7);
  });
});

describe('what the receiver counts and answers', () => {
  let rx: Receiver;
  before(async () => {
    rx = await startReceiver(emulator.jwksUrl, { falUserId: 'emulator-user' });
  });
  after(() => rx.close());

  test('each refusal counted once under its reason, each recorded webhook once; a full receiver says when to come back', async () => {
    const id = randomUUID();
    const good = body(id);
    const ok = await fetch(`${rx.url}?run=a&run=b&row=k`, { method: 'POST', headers: signedHeaders(key, { requestId: id, body: good }), body: good });
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get('content-type') ?? '', /^application\/json/);
    assert.deepEqual(await ok.json(), { ok: true });
    assert.deepEqual(rx.recorded.at(-1)!.query, { run: 'a', row: 'k' }, 'the first value of a repeated name');

    const cases: [number, Record<string, string>, string | Buffer][] = [
      [401, { 'content-type': 'application/json' }, good], // headers
      [403, signedHeaders(key, { requestId: id, body: good, userId: 'someone-else' }), good], // user
      [415, { ...signedHeaders(key, { requestId: id, body: good }), 'content-encoding': 'gzip' }, good], // encoding
      [413, unsignedHeaders(id), body(id, LIMIT)], // too_large, announced
      [401, unsignedHeaders(id), good], // signature
      [400, signedHeaders(key, { requestId: id, body: '[]' }), '[]'], // malformed
      [422, signedHeaders(key, { requestId: id, body: `[${'['.repeat(40)}${']'.repeat(40)}]` }), `[${'['.repeat(40)}${']'.repeat(40)}]`], // too_deep
    ];
    for (const [status, headers, data] of cases) {
      const r = await post(rx.url, headers, data);
      assert.equal(r.status, status, r.error);
      assert.ok(r.error.length > 0, `${status}: a reason in the answer`);
    }
    // Both slots held by slow senders: the next one is told to come back in 5 s.
    const slow = [0, 1].map(() => partialRequest(rx.url, unsignedHeaders('slow'), Buffer.from(body('slow', 100)), 10));
    await until(() => rx.counters.received >= 1 + cases.length + 2, 'two slow senders holding the slots');
    const busy = await fetch(rx.url, { method: 'POST', headers: signedHeaders(key, { requestId: id, body: good }), body: good });
    assert.equal(busy.status, 503);
    assert.equal(busy.headers.get('retry-after'), '5');
    await Promise.all(slow.map((r) => r.response));
    for (const r of slow) r.abort();

    assert.deepEqual(rx.counters, {
      received: 1 + cases.length + 3,
      recorded: 1,
      batches: 0,
      refused: { headers: 1, user: 1, encoding: 1, too_large: 1, busy: 1, body: 2, signature: 1, malformed: 1, too_deep: 1, unplaceable: 0 },
    });
  });

  test("fal's body: unknown fields dropped, an odd error turned into a string, what is not a fal webhook named", () => {
    const parse = (v: unknown) => parseFalWebhookBody(Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)));
    assert.deepEqual(parse({ request_id: 'r', status: 'OK', payload: { a: 1 }, extra: true, gateway_request_id: 'g' }), { request_id: 'r', status: 'OK', payload: { a: 1 }, gateway_request_id: 'g', error: null });
    assert.deepEqual(parse({ request_id: 'r', status: 'ERROR', error: { detail: 'x' }, gateway_request_id: 7 }), { request_id: 'r', status: 'ERROR', payload: undefined, error: '{"detail":"x"}' });
    assert.deepEqual(parse({ request_id: 'r', status: 'ERROR', error: 'boom' }), { request_id: 'r', status: 'ERROR', payload: undefined, error: 'boom' });
    assert.deepEqual(parse({ request_id: 'r', status: 'OK', error: null }), { request_id: 'r', status: 'OK', payload: undefined, error: null });
    assert.deepEqual(parse({ request_id: 'r', status: 'OK', error: 0 }), { request_id: 'r', status: 'OK', payload: undefined, error: '0' });
    const invalid: [unknown, string][] = [
      ['{', 'body is not JSON'],
      ['[]', 'body is not a JSON object'],
      ['null', 'body is not a JSON object'],
      ['"r"', 'body is not a JSON object'],
      [{ status: 'OK' }, 'body has no string request_id'],
      [{ request_id: '', status: 'OK' }, 'body has no string request_id'],
      [{ request_id: 5, status: 'OK' }, 'body has no string request_id'],
      [{ request_id: 'r', status: 'ok' }, 'body status is not OK or ERROR'],
      [{ request_id: 'r' }, 'body status is not OK or ERROR'],
    ];
    for (const [v, invalidReason] of invalid) assert.deepEqual(parse(v), { invalid: invalidReason }, JSON.stringify(v));
  });
});
