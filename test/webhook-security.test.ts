// The webhook receiver refuses forged, stale, tampered, mismatched, unsigned, malformed and oversized
// webhooks and records nothing for them; a valid one is recorded exactly once before 200; a rotated key is
// picked up with one JWKS re-fetch, and forgeries cannot make it fetch more often than the minimum interval.
// Real HTTP throughout: a local JWKS server (fetches counted) and the Express app on a free port.
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { pino } from 'pino';
import { createLogger, type Logger } from '../src/core/logger.ts';
import { signatureMessage, signWebhook, TIMESTAMP_TOLERANCE_SECONDS, verifyWebhookSignature, WEBHOOK_HEADERS } from '../src/core/webhookSignature.ts';
import { createWebhookApp, type WebhookAppOptions, type WebhookDelivery } from '../src/webhook/app.ts';
import { ed25519KeysOf, JwksCache } from '../src/webhook/jwks.ts';
import { checkSignatureHeaders, verifyFalWebhook } from '../src/webhook/verify.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const nowSec = () => Math.floor(Date.now() / 1000);
const newKey = () => generateKeyPairSync('ed25519');
const jwkOf = (k: KeyObject) => ({ ...k.export({ format: 'jwk' }), kid: 'k', use: 'sig', alg: 'EdDSA' });
// Keys a JWKS may also carry, which must be ignored.
const noise = [generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }), generateKeyPairSync('x25519').publicKey.export({ format: 'jwk' })];

const closeServer = (s: Server) =>
  new Promise<void>((resolve) => {
    s.close(() => resolve());
    s.closeAllConnections();
  });
async function listen(s: Server): Promise<string> {
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
}

/** A JWKS endpoint whose published keys can be switched (rotation) or taken down; counts fetches. */
async function startJwks(initial: KeyObject[]) {
  let published: KeyObject[] | 'down' = initial;
  let fetches = 0;
  const server = createServer((_req, res) => {
    fetches++;
    if (published === 'down') return void res.writeHead(500).end('down');
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: [...noise, ...published.map(jwkOf)] }));
  });
  const url = `${await listen(server)}/.well-known/jwks.json`;
  return {
    url,
    fetches: () => fetches,
    publish: (keys: KeyObject[] | 'down') => void (published = keys),
    close: () => closeServer(server),
  };
}

/** The receiver on a free port; record() pushes into `recorded` (or throws while `failing.on`). */
async function startReceiver(jwks: JwksCache, extra: Partial<WebhookAppOptions> = {}) {
  const recorded: WebhookDelivery[] = [];
  const failing = { on: false };
  const app = createWebhookApp({
    jwks,
    maxBodyBytes: LIMIT,
    logger: createLogger('webhook-test', 'silent'),
    record: async (d) => {
      if (failing.on) throw new Error('redis down');
      recorded.push(d);
    },
    ...extra,
  });
  const server = createServer(app);
  const url = await listen(server);
  return { url, recorded, failing, close: () => closeServer(server) };
}

const LIMIT = 4096;
const USER = 'user-1';

interface SignOpts {
  key?: KeyObject;
  requestId?: string;
  userId?: string;
  ts?: number | string;
  /** sign these bytes instead of the body actually sent */
  signedBody?: string;
}
function signedHeaders(body: string, key: KeyObject, o: SignOpts = {}): Record<string, string> {
  const fields = { requestId: o.requestId ?? 'req-1', userId: o.userId ?? USER, timestamp: String(o.ts ?? nowSec()) };
  return {
    'content-type': 'application/json',
    'x-fal-webhook-request-id': fields.requestId,
    'x-fal-webhook-user-id': fields.userId,
    'x-fal-webhook-timestamp': fields.timestamp,
    'x-fal-webhook-signature': signWebhook(fields, Buffer.from(o.signedBody ?? body), o.key ?? key),
  };
}
const falBody = (requestId = 'req-1', extra: Record<string, unknown> = {}) =>
  JSON.stringify({ request_id: requestId, gateway_request_id: requestId, status: 'OK', payload: { images: [{ url: 'https://fal.media/x.png' }] }, error: null, ...extra });
const QUERY = '?run=R1&row=K%2F7&attempt=2';
const post = (base: string, body: string | ReadableStream<Uint8Array>, headers: Record<string, string>, query = QUERY) =>
  fetch(`${base}/fal/webhook${query}`, { method: 'POST', headers, body, ...(typeof body === 'string' ? {} : { duplex: 'half' }) } as RequestInit);

describe('webhook receiver over HTTP', () => {
  const fal = newKey();
  let jwksServer: Awaited<ReturnType<typeof startJwks>>;
  let rx: Awaited<ReturnType<typeof startReceiver>>;
  const sign = (body: string, o: SignOpts = {}) => signedHeaders(body, fal.privateKey, o);
  const assertRefused = async (res: Response, status: number, what: string) => {
    assert.equal(res.status, status, what);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/, what);
    const json = (await res.json()) as { error?: unknown };
    assert.equal(typeof json.error, 'string', what);
    assert.equal(rx.recorded.length, 0, `${what}: nothing recorded`);
  };

  before(async () => {
    jwksServer = await startJwks([fal.publicKey]);
    rx = await startReceiver(new JwksCache(jwksServer.url));
  });
  after(async () => {
    await rx.close();
    await jwksServer.close();
  });
  beforeEach(() => {
    rx.recorded.length = 0;
    rx.failing.on = false;
  });

  test('a valid signed webhook → 200 and exactly one record with the right fields and our query', async () => {
    const body = falBody('req-1');
    const t0 = Date.now();
    const res = await post(rx.url, body, sign(body));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true });
    assert.equal(rx.recorded.length, 1);
    const d = rx.recorded[0]!;
    assert.equal(d.requestId, 'req-1');
    assert.equal(d.userId, USER);
    assert.deepEqual(d.body, JSON.parse(body));
    assert.deepEqual(d.query, { run: 'R1', row: 'K/7', attempt: '2' });
    assert.ok(d.receivedAt >= t0 && d.receivedAt <= Date.now());
  });

  test('an ERROR webhook is recorded too; no query string → empty query', async () => {
    const body = JSON.stringify({ request_id: 'req-e', status: 'ERROR', payload: { detail: [{ msg: 'nsfw' }] }, error: 'Invalid status code: 422' });
    assert.equal((await post(rx.url, body, sign(body, { requestId: 'req-e' }), '')).status, 200);
    assert.equal(rx.recorded.length, 1);
    assert.equal(rx.recorded[0]!.body.status, 'ERROR');
    assert.equal(rx.recorded[0]!.body.error, 'Invalid status code: 422');
    assert.deepEqual(rx.recorded[0]!.query, {});
  });

  test('forged (signed with another key) → 401, nothing recorded', async () => {
    const body = falBody();
    await assertRefused(await post(rx.url, body, sign(body, { key: newKey().privateKey })), 401, 'forged');
  });

  test('stale timestamps (now-301, now+301) → 401; within ±299 s accepted', async () => {
    const body = falBody();
    await assertRefused(await post(rx.url, body, sign(body, { ts: nowSec() - TIMESTAMP_TOLERANCE_SECONDS - 1 })), 401, 'now-301');
    await assertRefused(await post(rx.url, body, sign(body, { ts: nowSec() + TIMESTAMP_TOLERANCE_SECONDS + 1 })), 401, 'now+301');
    await assertRefused(await post(rx.url, body, sign(body, { ts: `${nowSec()}.5` })), 401, 'fractional');
    assert.equal((await post(rx.url, body, sign(body, { ts: nowSec() - 299 }))).status, 200);
    assert.equal((await post(rx.url, body, sign(body, { ts: nowSec() + 299 }))).status, 200);
    assert.equal(rx.recorded.length, 2);
  });

  test('tampered body or signed fields → 401', async () => {
    const body = falBody();
    const signedForOther = sign(body, { signedBody: body.replace('"OK"', '"ERROR"') });
    await assertRefused(await post(rx.url, body, signedForOther), 401, 'signature for different bytes');
    await assertRefused(await post(rx.url, `${body} `, sign(body)), 401, 'one extra byte');
    await assertRefused(await post(rx.url, body, { ...sign(body), 'x-fal-webhook-user-id': 'someone-else' }), 401, 'user id swapped');
    await assertRefused(await post(rx.url, body, { ...sign(body), 'x-fal-webhook-timestamp': String(nowSec() - 1) }), 401, 'timestamp swapped');
  });

  test('header request id ≠ body request_id → 401 (a valid signature for another request)', async () => {
    const body = falBody('req-2');
    await assertRefused(await post(rx.url, body, sign(body, { requestId: 'req-1' })), 401, 'mismatch');
  });

  test('missing headers → 401 (each one, and all)', async () => {
    const body = falBody();
    for (const name of ['x-fal-webhook-request-id', 'x-fal-webhook-user-id', 'x-fal-webhook-timestamp', 'x-fal-webhook-signature']) {
      const headers = sign(body);
      delete headers[name];
      const res = await post(rx.url, body, headers);
      assert.equal(res.status, 401, name);
      assert.match(((await res.json()) as { error: string }).error, new RegExp(name), name);
    }
    await assertRefused(await post(rx.url, body, { 'content-type': 'application/json' }), 401, 'unsigned');
    await assertRefused(await post(rx.url, body, { ...sign(body), 'x-fal-webhook-signature': 'zz'.repeat(64) }), 401, 'non-hex signature');
  });

  test('correctly signed but malformed JSON or not a fal webhook → 400, nothing recorded', async () => {
    const bodies = [
      '{"request_id": "req-1", ',
      '',
      'null',
      '[]',
      JSON.stringify({ status: 'OK' }),
      JSON.stringify({ request_id: 42, status: 'OK' }),
      JSON.stringify({ request_id: 'req-1', status: 'MAYBE' }),
      JSON.stringify({ request_id: 'req-1' }),
    ];
    for (const body of bodies) await assertRefused(await post(rx.url, body, sign(body)), 400, `body ${JSON.stringify(body)}`);
  });

  test('oversized body → 413, with a truthful content-length and without one (chunked); exactly the limit is fine', async () => {
    const big = falBody('req-1', { payload: 'x'.repeat(LIMIT) });
    await assertRefused(await post(rx.url, big, sign(big)), 413, 'announced by content-length');
    const chunked = new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < big.length; i += 1000) c.enqueue(new TextEncoder().encode(big.slice(i, i + 1000)));
        c.close();
      },
    });
    await assertRefused(await post(rx.url, chunked, sign(big)), 413, 'chunked, no content-length');

    const base = falBody('req-1', { payload: '' });
    const exact = falBody('req-1', { payload: 'y'.repeat(LIMIT - Buffer.byteLength(base)) });
    assert.equal(Buffer.byteLength(exact), LIMIT);
    assert.equal((await post(rx.url, exact, sign(exact))).status, 200);
    assert.equal(rx.recorded.length, 1);
  });

  test('body-parser errors are JSON, not HTML (unsupported content-encoding)', async () => {
    const body = falBody();
    const res = await post(rx.url, body, { ...sign(body), 'content-encoding': 'x-unknown' });
    await assertRefused(res, 415, 'unsupported encoding');
  });

  test('record() throwing → 503 (so fal re-delivers); the re-delivery is recorded once', async () => {
    const body = falBody();
    rx.failing.on = true;
    const res = await post(rx.url, body, sign(body));
    assert.equal(res.status, 503);
    assert.equal(rx.recorded.length, 0);
    rx.failing.on = false;
    assert.equal((await post(rx.url, body, sign(body))).status, 200);
    assert.equal(rx.recorded.length, 1);
  });

  test('/healthz → 200 {ok:true}; unknown routes and GET /fal/webhook → 404 JSON', async () => {
    const res = await fetch(`${rx.url}/healthz`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { ok: true });
    for (const path of ['/nope', '/fal/webhook']) {
      const r = await fetch(`${rx.url}${path}`);
      assert.equal(r.status, 404, path);
      assert.deepEqual(await r.json(), { error: 'not found' });
    }
  });

  test('nothing above (valid or forged, within the default 30 s interval) re-fetched the JWKS', () => {
    assert.equal(jwksServer.fetches(), 1);
  });
});

test('/healthz → 503 when isReady() is false or throws', async () => {
  const jw = await startJwks([newKey().publicKey]);
  let ready: () => Promise<boolean> = async () => false;
  const rx = await startReceiver(new JwksCache(jw.url), { isReady: () => ready() });
  try {
    let res = await fetch(`${rx.url}/healthz`);
    assert.equal(res.status, 503);
    assert.deepEqual(await res.json(), { ok: false });
    ready = async () => {
      throw new Error('redis down');
    };
    assert.equal((await fetch(`${rx.url}/healthz`)).status, 503);
    ready = async () => true;
    res = await fetch(`${rx.url}/healthz`);
    assert.equal(res.status, 200);
  } finally {
    await rx.close();
    await jw.close();
  }
});

test('key rotation: the new key is accepted after exactly one re-fetch; forgery floods stay within the min interval', async () => {
  const MIN = 400;
  const oldKey = newKey();
  const rotated = newKey();
  const jw = await startJwks([oldKey.publicKey]);
  // The cache's clock is moved by hand: the test does not depend on how fast this machine is.
  let clock = 1_000_000;
  const rx = await startReceiver(new JwksCache(jw.url, { minRefreshIntervalMs: MIN, now: () => clock }));
  const body = falBody();
  try {
    assert.equal((await post(rx.url, body, signedHeaders(body, oldKey.privateKey))).status, 200);
    assert.equal(jw.fetches(), 1, 'first use fetches');

    clock += MIN + 1;
    jw.publish([rotated.publicKey]);
    assert.equal((await post(rx.url, body, signedHeaders(body, rotated.privateKey))).status, 200, 'rotated key accepted');
    assert.equal(jw.fetches(), 2, 'exactly one re-fetch');
    assert.equal((await post(rx.url, body, signedHeaders(body, oldKey.privateKey))).status, 401, 'retired key refused');

    const flood = async () => {
      const statuses = await Promise.all(Array.from({ length: 30 }, () => post(rx.url, body, signedHeaders(body, newKey().privateKey)).then((r) => r.status)));
      assert.deepEqual(new Set(statuses), new Set([401]));
    };
    await flood();
    assert.equal(jw.fetches(), 2, 'no re-fetch within the min interval');
    clock += MIN + 1;
    await flood();
    assert.equal(jw.fetches(), 3, 'one re-fetch per interval, shared by the whole flood');
    assert.equal(rx.recorded.length, 2);
  } finally {
    await rx.close();
    await jw.close();
  }
});

test('JWKS unreachable and no key ever loaded → 503 (fal retries), nothing recorded, fetches rate-limited', async () => {
  const fal = newKey();
  const jw = await startJwks([fal.publicKey]);
  jw.publish('down');
  // The cache's clock is moved by hand: five posts take longer than 300 ms on a loaded machine.
  let clock = 1_000_000;
  const rx = await startReceiver(new JwksCache(jw.url, { minRefreshIntervalMs: 300, now: () => clock }));
  const body = falBody();
  try {
    for (let i = 0; i < 5; i++) assert.equal((await post(rx.url, body, signedHeaders(body, fal.privateKey))).status, 503);
    assert.equal(jw.fetches(), 1);
    assert.equal(rx.recorded.length, 0);
    jw.publish([fal.publicKey]);
    clock += 301;
    assert.equal((await post(rx.url, body, signedHeaders(body, fal.privateKey))).status, 200);
    assert.equal(jw.fetches(), 2);
  } finally {
    await rx.close();
    await jw.close();
  }
});

test('refusals are logged at warn with reason and request id; bodies never logged', async () => {
  const lines: Record<string, unknown>[] = [];
  const logger: Logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  const fal = newKey();
  const jw = await startJwks([fal.publicKey]);
  const rx = await startReceiver(new JwksCache(jw.url), { logger });
  const SECRET = 'payload-marker-7f3a';
  const body = falBody('req-log', { payload: { images: [{ url: `https://fal.media/${SECRET}.png` }] } });
  try {
    assert.equal((await post(rx.url, body, signedHeaders(body, newKey().privateKey, { requestId: 'req-log' }))).status, 401);
    assert.equal((await post(rx.url, body, signedHeaders(body, fal.privateKey, { requestId: 'req-log' }))).status, 200);
    const warn = lines.find((l) => l.level === 40);
    assert.ok(warn, 'a warn line');
    assert.equal(warn.requestId, 'req-log');
    assert.match(String(warn.reason), /signature/);
    assert.ok(!JSON.stringify(lines).includes(SECRET), 'the body is never logged');
  } finally {
    await rx.close();
    await jw.close();
  }
});

test('the signature scheme: exactly 64 bytes in hex, of these fields and this body, under this key', () => {
  const fal = newKey();
  const fields = { requestId: 'req-1', userId: USER, timestamp: '1700000000' };
  const body = Buffer.from(falBody());
  const sig = signWebhook(fields, body, fal.privateKey);
  assert.match(sig, /^[0-9a-f]{128}$/);
  // What fal signs (its documentation): the fields and the body's sha256, one per line. The emulator
  // signs with the same function, so only this pins the format a real fal webhook has.
  const bodyHash = createHash('sha256').update(body).digest('hex');
  assert.equal(signatureMessage(fields, body).toString('utf8'), `req-1\n${USER}\n1700000000\n${bodyHash}`);
  const check = (s: string, f = fields, b = body, k = fal.publicKey) => verifyWebhookSignature(f, b, s, k);
  assert.equal(check(sig), true);
  assert.equal(check(sig.toUpperCase()), true, 'hex in capitals is the same signature');
  // Node's hex decoding stops at the first non-hex character: junk around a valid signature must not pass.
  for (const bad of [`${sig}zz`, `${sig}00`, `zz${sig}`, ` ${sig}`, sig.slice(0, 126), `${sig.slice(0, 127)}g`]) assert.equal(check(bad), false, bad);
  assert.equal(check(sig, { ...fields, requestId: 'req-2' }), false, 'another request');
  assert.equal(check(sig, { ...fields, userId: 'user-2' }), false, 'another user');
  assert.equal(check(sig, { ...fields, timestamp: '1700000001' }), false, 'another time');
  assert.equal(check(sig, fields, Buffer.from(falBody('req-1', { status: 'ERROR' }))), false, 'another body');
  assert.equal(check(sig, fields, body, newKey().publicKey), false, 'another key');
  // fal's header names, as its documentation spells them (the receiver reads exactly these).
  assert.deepEqual(WEBHOOK_HEADERS, {
    requestId: 'x-fal-webhook-request-id',
    userId: 'x-fal-webhook-user-id',
    timestamp: 'x-fal-webhook-timestamp',
    signature: 'x-fal-webhook-signature',
  });
});

describe('verifyFalWebhook (clock injected)', () => {
  const fal = newKey();
  let fetches = 0;
  const fetchImpl = (async () => {
    fetches++;
    return Response.json({ keys: [jwkOf(fal.publicKey)] });
  }) as typeof fetch;
  const jwks = new JwksCache('http://jwks.invalid/', { fetchImpl });
  const NOW = 1_700_000_000;
  const body = Buffer.from(falBody());
  const headersAt = (ts: number | string) => signedHeaders(body.toString(), fal.privateKey, { ts });

  test('exactly ±300 s is accepted, ±301 s is stale', async () => {
    for (const d of [-300, 0, 300]) assert.deepEqual(await verifyFalWebhook(headersAt(NOW + d), body, jwks, NOW), { ok: true, requestId: 'req-1', userId: USER });
    for (const d of [-301, 301]) {
      const v = await verifyFalWebhook(headersAt(NOW + d), body, jwks, NOW);
      assert.equal(v.ok, false);
      assert.match(!v.ok ? v.reason : '', /stale/);
    }
  });

  test('non-integer timestamps fail', async () => {
    for (const ts of ['1700000000.0', '1.7e9', '-1700000000', 'soon', '']) assert.equal((await verifyFalWebhook(headersAt(ts), body, jwks, NOW)).ok, false, ts);
  });

  test('repeated headers use their first value; a malformed signature never triggers a JWKS fetch', async () => {
    const h: Record<string, string | string[]> = { ...headersAt(NOW) };
    h['x-fal-webhook-user-id'] = [USER, 'other'];
    assert.equal((await verifyFalWebhook(h, body, jwks, NOW)).ok, true);
    const before = fetches;
    for (const sig of ['abc', 'g'.repeat(128), '0'.repeat(127)]) {
      assert.equal((await verifyFalWebhook({ ...headersAt(NOW), 'x-fal-webhook-signature': sig }, body, jwks, NOW)).ok, false);
    }
    assert.equal(fetches, before);
  });
});

describe('signature headers and keys, checked one by one', () => {
  const fal = newKey();
  const NOW = 1_700_000_000;
  const body = Buffer.from(falBody());
  const headersAt = (o: SignOpts = {}) => signedHeaders(body.toString(), fal.privateKey, { ts: NOW, ...o });
  const reason = (h: Record<string, string | string[] | undefined>) => {
    const c = checkSignatureHeaders(h, NOW);
    return c.ok ? 'ok' : c.reason;
  };

  test('each refusal names what is wrong', () => {
    const h = headersAt();
    assert.equal(reason(h), 'ok');
    assert.equal(reason({ ...h, 'x-fal-webhook-user-id': undefined, 'x-fal-webhook-signature': '' }), 'missing header x-fal-webhook-user-id, x-fal-webhook-signature');
    assert.equal(reason({ ...h, 'x-fal-webhook-timestamp': '17e8' }), 'timestamp is not integer unix seconds');
    const sig = h['x-fal-webhook-signature']!;
    for (const bad of [`${sig}00`, `00${sig}`, sig.slice(2), `${sig.slice(0, 126)}zz`]) assert.equal(reason({ ...h, 'x-fal-webhook-signature': bad }), 'signature is not 128 hex characters', bad);
  });

  test('the request id: 1-256 printable ASCII characters, nothing else', () => {
    const h = headersAt();
    const refused = 'request id is not 1-256 printable ASCII characters';
    assert.equal(reason({ ...h, 'x-fal-webhook-request-id': 'r'.repeat(256) }), 'ok');
    assert.equal(reason({ ...h, 'x-fal-webhook-request-id': 'r'.repeat(257) }), refused);
    for (const id of ['req 1', 'réq', 'req\u0001']) assert.equal(reason({ ...h, 'x-fal-webhook-request-id': `${id}x` }), refused, id);
    assert.equal(reason({ ...h, 'x-fal-webhook-request-id': 'x\u0001' }), refused, 'the whole id, not its start');
    assert.equal(reason({ ...h, 'x-fal-webhook-request-id': '\u0001x' }), refused, 'the whole id, not its end');
  });

  test('surrounding white space of a header is not part of its value', () => {
    const h = headersAt();
    assert.equal(reason({ ...h, 'x-fal-webhook-timestamp': ` ${NOW} `, 'x-fal-webhook-request-id': ' req-1 ' }), 'ok');
  });

  test('a webhook signed by any one of the published keys verifies; verified ones cause no JWKS fetch', async () => {
    const other = newKey();
    let fetches = 0;
    let clock = 0;
    const fetchImpl = (async () => {
      fetches++;
      return Response.json({ keys: [jwkOf(other.publicKey), jwkOf(fal.publicKey)] });
    }) as typeof fetch;
    const jwks = new JwksCache('http://jwks.invalid/', { fetchImpl, minRefreshIntervalMs: 1000, now: () => clock });
    assert.equal((await verifyFalWebhook(headersAt(), body, jwks, NOW)).ok, true, 'signed by the second key');
    assert.equal((await verifyFalWebhook(signedHeaders(body.toString(), other.privateKey, { ts: NOW }), body, jwks, NOW)).ok, true, 'signed by the first');
    assert.equal(fetches, 1);
    clock += 5000; // past the refresh interval, within the keys' ttl: a good signature is no reason to fetch
    assert.equal((await verifyFalWebhook(headersAt(), body, jwks, NOW)).ok, true);
    assert.equal(fetches, 1);
  });
});

describe('JwksCache', () => {
  const a = newKey();
  const b = newKey();
  const same = (x: KeyObject, y: KeyObject) => x.equals(y);
  /** fetchImpl stub whose answer can be changed; counts calls. */
  function stub(answer: () => Promise<Response>) {
    const s = {
      calls: 0,
      answer,
      fetchImpl: (async () => {
        s.calls++;
        return s.answer();
      }) as typeof fetch,
    };
    return s;
  }
  const jwksOf = (...keys: KeyObject[]) => async () => Response.json({ keys: [...noise, { kty: 'OKP', crv: 'Ed25519', x: 'AAAA' }, ...keys.map(jwkOf)] });

  test('only OKP/Ed25519 keys are used; other and malformed keys are ignored', async () => {
    const s = stub(jwksOf(a.publicKey, b.publicKey));
    const keys = await new JwksCache('u', { fetchImpl: s.fetchImpl }).keys();
    assert.equal(keys.length, 2);
    assert.ok(same(keys[0]!, a.publicKey) && same(keys[1]!, b.publicKey));
    assert.throws(() => ed25519KeysOf({ nokeys: [] }), /keys/);
    assert.deepEqual(ed25519KeysOf({ keys: noise }), []);
  });

  test('cached; concurrent callers share one in-flight fetch', async () => {
    const s = stub(async () => {
      await sleep(30);
      return jwksOf(a.publicKey)();
    });
    const cache = new JwksCache('u', { fetchImpl: s.fetchImpl, minRefreshIntervalMs: 0 });
    const all = await Promise.all([cache.keys(), cache.keys(), cache.refresh(), cache.keys(), cache.refresh()]);
    assert.equal(s.calls, 1);
    for (const k of all) assert.equal(k, all[0]);
    await cache.keys();
    assert.equal(s.calls, 1, 'cached');
  });

  test('re-fetched after the ttl', async () => {
    const s = stub(jwksOf(a.publicKey));
    let clock = 0;
    const cache = new JwksCache('u', { fetchImpl: s.fetchImpl, ttlMs: 40, minRefreshIntervalMs: 0, now: () => clock });
    await cache.keys();
    clock += 39;
    await cache.keys();
    assert.equal(s.calls, 1);
    clock += 2;
    s.answer = jwksOf(b.publicKey);
    assert.ok(same((await cache.keys())[0]!, b.publicKey));
    assert.equal(s.calls, 2);
  });

  test('refresh() fetches at most once per minRefreshIntervalMs', async () => {
    const s = stub(jwksOf(a.publicKey));
    let clock = 0;
    const cache = new JwksCache('u', { fetchImpl: s.fetchImpl, minRefreshIntervalMs: 80, now: () => clock });
    await cache.keys();
    for (let i = 0; i < 10; i++) {
      await cache.refresh();
      clock += 7;
    }
    assert.equal(s.calls, 1);
    clock += 20;
    s.answer = jwksOf(b.publicKey);
    assert.ok(same((await cache.refresh())[0]!, b.publicKey));
    assert.equal(s.calls, 2);
  });

  test('a failed fetch keeps serving the previous keys', async () => {
    const s = stub(jwksOf(a.publicKey));
    const cache = new JwksCache('u', { fetchImpl: s.fetchImpl, minRefreshIntervalMs: 0 });
    await cache.keys();
    for (const failure of [async () => new Response('no', { status: 502 }), async () => new Response('<html>'), jwksOf(), async () => Promise.reject(new Error('ECONNREFUSED'))]) {
      s.answer = failure;
      const keys = await cache.refresh();
      assert.equal(keys.length, 1);
      assert.ok(same(keys[0]!, a.publicKey));
    }
    assert.equal(s.calls, 5);
  });

  test('no key ever loaded → a clear error, retried no more often than the min interval', async () => {
    const s = stub(async () => new Response('down', { status: 503 }));
    const cache = new JwksCache('https://fal.example/jwks', { fetchImpl: s.fetchImpl, minRefreshIntervalMs: 60_000 });
    await assert.rejects(cache.keys(), /cannot load fal's webhook keys from https:\/\/fal\.example\/jwks: JWKS answered HTTP 503/);
    await assert.rejects(cache.refresh(), /HTTP 503/);
    await assert.rejects(cache.keys(), /HTTP 503/);
    assert.equal(s.calls, 1);
    const noEd = stub(async () => Response.json({ keys: noise }));
    await assert.rejects(new JwksCache('u', { fetchImpl: noEd.fetchImpl }).keys(), /no Ed25519 key/);
  });

  test('a hanging JWKS times out', async () => {
    const fetchImpl = ((_url: string, init?: RequestInit) =>
      new Promise<Response>((_resolve, reject) => {
        init?.signal?.addEventListener('abort', () => reject(init.signal?.reason as Error));
      })) as typeof fetch;
    const keepAlive = setTimeout(() => {}, 5_000); // AbortSignal.timeout's timer alone does not hold the event loop
    try {
      await assert.rejects(new JwksCache('u', { fetchImpl, timeoutMs: 50 }).keys(), /cannot load fal's webhook keys.*(timeout|aborted)/i);
    } finally {
      clearTimeout(keepAlive);
    }
  });
});
