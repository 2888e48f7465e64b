// What each answer of fal means for the money: every failure of a fal call becomes one typed error
// that says what to do — try again later (429, 5xx, nothing sent), wait for the webhook (the call may
// have reached fal), pause (401/403), fail the row (422 and other 4xx, the start timeout), resubmit
// (404) — carrying fal's error type and X-Fal-Retryable, which the error table (falErrors.ts) turns
// into a verdict. Checked on the classifier, and through the unmodified client against a small
// server of the test's own.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import { DownloadError, FalAmbiguousError, FalAuthError, FalNotFoundError, FalRejectedError, FalStartTimeoutError, FalTransientError, errorMessage } from '../src/core/errors.ts';
import { categoryOfType, ERROR_CATEGORIES, FAL_ERROR_TYPES, falErrorInfo, parseCategories, verdictOf, webhookErrorInfo } from '../src/core/falErrors.ts';
import { classifyFalError, createFal, describeDetail, FAL_REST_HOST, falUrl, parseRetryAfter } from '../src/core/fal.ts';
import { freePort } from '../src/local/ports.ts';

const ENDPOINT = 'fal-ai/flux-2-lora-gallery/face-to-full-portrait';

/** An HTTP error as the fal client throws it (ApiError: status and body). */
const apiError = (status: number, body: unknown) => Object.assign(new Error(`HTTP ${status}`), { status, body });

test('401 and 403 are the key: submissions pause, whatever the detail says', () => {
  for (const status of [401, 403]) {
    const err = classifyFalError(apiError(status, { detail: 'User is locked' }));
    assert.ok(err instanceof FalAuthError, `${status}`);
    assert.equal(err.status, status);
    assert.equal(err.message, `fal refused the API key (${status}): User is locked`);
  }
});

test('404 means fal does not know the request', () => {
  const err = classifyFalError(apiError(404, { detail: 'Request not found' }));
  assert.ok(err instanceof FalNotFoundError);
  assert.equal(err.message, 'fal does not know this request (404): Request not found');
});

test('429 and every 5xx are transient: nothing was accepted', () => {
  for (const status of [429, 500, 502, 503, 599]) {
    const err = classifyFalError(apiError(status, 'busy'));
    assert.ok(err instanceof FalTransientError, `${status}`);
    assert.equal(err.status, status);
    assert.equal(err.message, `fal answered ${status}: busy`);
  }
});

test('422 and other 4xx reject the input, with fal\'s detail', () => {
  const detail = [{ loc: ['body', 'num_images'], msg: 'Input should be less than or equal to 4', type: 'less_than_equal' }];
  const err = classifyFalError(apiError(422, { detail }));
  assert.ok(err instanceof FalRejectedError);
  assert.equal(err.status, 422);
  assert.equal(err.message, 'fal rejected the input (422): num_images: Input should be less than or equal to 4');
  for (const status of [400, 405, 413, 428]) {
    const e = classifyFalError(apiError(status, { detail: 'no' }));
    assert.ok(e instanceof FalRejectedError, `${status}`);
    assert.equal(e.status, status);
  }
});

test('an error without an HTTP status may have reached fal: ambiguous', () => {
  const err = classifyFalError(new TypeError('fetch failed'));
  assert.ok(err instanceof FalAmbiguousError);
  assert.equal(err.message, 'fal call failed: fetch failed');
  assert.ok(classifyFalError('boom') instanceof FalAmbiguousError);
  assert.equal(classifyFalError('boom').message, 'fal call failed: boom');
  assert.ok(classifyFalError(Object.assign(new Error('x'), { status: '500' })) instanceof FalAmbiguousError, 'a status that is no number');
});

test('errors already typed pass through unchanged', () => {
  for (const err of [
    new FalTransientError('t', 503, 1000),
    new FalAmbiguousError('a'),
    new FalAuthError('k', 401),
    new FalRejectedError('r', 422),
    new FalNotFoundError('n'),
  ]) {
    assert.equal(classifyFalError(err), err);
  }
});

test('each error type carries its name: logs and the reconciler read it', () => {
  assert.equal(new FalTransientError('t').name, 'FalTransientError');
  assert.equal(new FalAmbiguousError('a').name, 'FalAmbiguousError');
  assert.equal(new FalAuthError('k', 401).name, 'FalAuthError');
  assert.equal(new FalRejectedError('r', 422).name, 'FalRejectedError');
  assert.equal(new FalNotFoundError('n').name, 'FalNotFoundError');
  const d = new DownloadError('too big', true);
  assert.deepEqual([d.name, d.message, d.permanent], ['DownloadError', 'too big', true]);
  assert.equal(new DownloadError('later', false).permanent, false);
  const t = new FalTransientError('busy', 503, 2000);
  assert.deepEqual([t.message, t.status, t.retryAfterMs], ['busy', 503, 2000]);
  assert.equal(errorMessage(new Error('plain')), 'plain');
  assert.equal(errorMessage('text'), 'text');
  assert.equal(errorMessage(42), '42');
});

test('fal error bodies become one readable sentence', () => {
  assert.equal(describeDetail('plain text'), 'plain text');
  assert.equal(describeDetail({ detail: 'Request is still in progress' }), 'Request is still in progress');
  assert.equal(
    describeDetail({ detail: [{ loc: ['body', 'image_size', 'width'], msg: 'too big' }, { loc: ['query'], msg: 'bad' }] }),
    'image_size.width: too big; query: bad',
  );
  assert.equal(describeDetail({ detail: [{ type: 'x' }] }), ': {"type":"x"}');
  assert.equal(describeDetail({ error: 'x'.repeat(600) }), JSON.stringify({ error: 'x'.repeat(600) }).slice(0, 500));
  assert.equal(describeDetail(undefined), undefined);
  assert.equal(describeDetail(null), undefined);
  assert.equal(describeDetail(42), undefined);
  const err = classifyFalError(Object.assign(new Error('HTTP 422'), { status: 422 }));
  assert.equal(err.message, 'fal rejected the input (422): HTTP 422', 'without a body, the error\'s own message');
});

test('Retry-After in seconds or as a date; nothing usable is no hint', () => {
  const now = Date.parse('2026-01-01T00:00:00Z');
  assert.equal(parseRetryAfter('3', now), 3000);
  assert.equal(parseRetryAfter('0', now), 0);
  assert.equal(parseRetryAfter('-2', now), 0);
  assert.equal(parseRetryAfter('1.5', now), 1500);
  assert.equal(parseRetryAfter('Thu, 01 Jan 2026 00:00:07 GMT', now), 7000);
  assert.equal(parseRetryAfter('Wed, 31 Dec 2025 23:59:00 GMT', now), 0, 'a date in the past');
  assert.equal(parseRetryAfter('soon', now), undefined);
  assert.equal(parseRetryAfter('', now), undefined);
  assert.equal(parseRetryAfter(null, now), undefined);
});

// ---- through the unmodified client -----------------------------------------------------------

/** A call that hangs fails its test, and the file still ends (the server closes every connection). */
const NET = { timeout: 10_000 };

type Handler = (req: IncomingMessage, res: ServerResponse) => void;
let handler: Handler = (_req, res) => void res.end();
const seen: string[] = [];
const server = createServer((req, res) => {
  seen.push(`${req.method} ${req.url}`);
  req.resume();
  req.on('end', () => handler(req, res));
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
after(
  () =>
    new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
);

async function submitError(fal = createFal({ FAL_KEY: 'k', FAL_QUEUE_URL: `${base}/` })): Promise<Error> {
  try {
    await fal.queue.submit(ENDPOINT, { input: { image_urls: ['https://x.example/f.png'] } });
  } catch (err) {
    return classifyFalError(err);
  }
  return assert.fail('the submit succeeded');
}

test('falUrl: the queue always goes to FAL_QUEUE_URL; fal storage only when that is not fal itself', () => {
  const emu = 'http://127.0.0.1:9/';
  assert.equal(falUrl('https://queue.fal.run/fal-ai/x', emu), 'http://127.0.0.1:9/fal-ai/x');
  assert.equal(falUrl(`${FAL_REST_HOST}/storage/upload/initiate`, emu), 'http://127.0.0.1:9/storage/upload/initiate');
  assert.equal(falUrl(`${FAL_REST_HOST}/storage/upload/initiate`, 'https://queue.fal.run'), `${FAL_REST_HOST}/storage/upload/initiate`, 'real fal: storage stays on fal');
  assert.equal(falUrl('https://v3.fal.media/files/a.png', emu), 'https://v3.fal.media/files/a.png', 'anything else is left alone');
});

test('answers that are not JSON bodies pass through as fal sent them; JSON keeps 64-bit seeds exact', NET, async () => {
  const fal = createFal({ FAL_KEY: 'k', FAL_QUEUE_URL: base });
  const seed = '18446744073709551557';
  handler = (_req, res) => void res.writeHead(200, { 'content-type': 'application/json; charset=utf-8' }).end(`{"images":[],"seed":${seed}}`);
  const { data } = await fal.queue.result(ENDPOINT, { requestId: 'req-1' });
  assert.equal(String((data as { seed: unknown }).seed), seed);
  // A text body that looks like JSON with a seed, sent as text: not touched (the client reads it as text).
  handler = (_req, res) => void res.writeHead(200, { 'content-type': 'text/plain' }).end(`{"seed":${seed}}`);
  const text = await fal.queue.result(ENDPOINT, { requestId: 'req-1' });
  assert.equal(text.data as unknown, `{"seed":${seed}}`);
});

test('the client\'s calls go to FAL_QUEUE_URL, and a 200 is a request id', NET, async () => {
  handler = (_req, res) => void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ request_id: 'req-1', status: 'IN_QUEUE' }));
  seen.length = 0;
  const res = await createFal({ FAL_KEY: 'k', FAL_QUEUE_URL: `${base}//` }).queue.submit(ENDPOINT, { input: { image_urls: ['https://x.example/f.png'] } });
  assert.equal(res.request_id, 'req-1');
  assert.deepEqual(seen, [`POST /${ENDPOINT}`]);
});

test('429 with Retry-After is transient at once (no hidden retries), with the hint and the body', NET, async () => {
  handler = (_req, res) => void res.writeHead(429, { 'retry-after': '3' }).end('slow down');
  seen.length = 0;
  const err = await submitError();
  assert.ok(err instanceof FalTransientError);
  assert.deepEqual([err.status, err.retryAfterMs, err.message], [429, 3000, 'fal answered 429: slow down']);
  assert.equal(seen.length, 1, 'one call: the client did not retry on its own');
});

test('503 without a body is transient', NET, async () => {
  handler = (_req, res) => void res.writeHead(503).end();
  const err = await submitError();
  assert.ok(err instanceof FalTransientError);
  assert.deepEqual([err.status, err.retryAfterMs, err.message], [503, undefined, 'fal answered 503']);
});

test('500 through the client is transient', NET, async () => {
  handler = (_req, res) => void res.writeHead(500, { 'retry-after': 'Thu, 01 Jan 2099 00:00:00 GMT' }).end('{"detail":"Internal Server Error"}');
  const err = await submitError();
  assert.ok(err instanceof FalTransientError);
  assert.equal(err.status, 500);
  assert.ok(err.retryAfterMs! > 365 * 86400_000, 'an HTTP-date Retry-After');
  assert.equal(err.message, 'fal answered 500: {"detail":"Internal Server Error"}');
});

test('a long error body is cut to 300 characters', NET, async () => {
  handler = (_req, res) => void res.writeHead(502).end('x'.repeat(1000));
  const err = await submitError();
  assert.equal(err.message, `fal answered 502: ${'x'.repeat(300)}`);
});

test('404 on status means a lost request', NET, async () => {
  handler = (_req, res) => void res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ detail: 'Request not found' }));
  let err: Error | undefined;
  try {
    await createFal({ FAL_KEY: 'k', FAL_QUEUE_URL: base }).queue.status(ENDPOINT, { requestId: 'req-9', logs: false });
  } catch (e) {
    err = classifyFalError(e);
  }
  assert.ok(err instanceof FalNotFoundError);
  assert.equal(err.message, 'fal does not know this request (404): Request not found');
});

test('422 through the client fails the row with fal\'s detail', NET, async () => {
  handler = (_req, res) =>
    void res.writeHead(422, { 'content-type': 'application/json' }).end(JSON.stringify({ detail: [{ loc: ['body', 'seed'], msg: 'must be an integer' }] }));
  const err = await submitError();
  assert.ok(err instanceof FalRejectedError);
  assert.equal(err.message, 'fal rejected the input (422): seed: must be an integer');
});

test('a refused connection is transient: nothing was sent', NET, async () => {
  const port = await freePort();
  const err = await submitError(createFal({ FAL_KEY: 'k', FAL_QUEUE_URL: `http://127.0.0.1:${port}` }));
  assert.ok(err instanceof FalTransientError);
  assert.equal(err.message, 'fal unreachable (ECONNREFUSED)');
});

test('a connection reset after sending is ambiguous: fal may have accepted it', NET, async () => {
  handler = (req) => req.socket.destroy();
  seen.length = 0;
  const err = await submitError();
  assert.ok(err instanceof FalAmbiguousError);
  assert.match(err.message, /^fal call interrupted \(\w+\): /);
  assert.equal(seen.length, 1, 'never retried: a retry could pay twice');
});

test('no answer within the timeout is ambiguous', NET, async () => {
  handler = () => undefined; // never answers
  const err = await submitError(createFal({ FAL_KEY: 'k', FAL_QUEUE_URL: base }, 200));
  assert.ok(err instanceof FalAmbiguousError);
  assert.match(err.message, /^fal call interrupted \(TimeoutError\)/);
});

// ---- fal's error kinds (falErrors.ts) -----------------------------------------------------------

test('the error table: every fal type has a status, a billing rule and a category; what fal bills is never retried', () => {
  for (const [type, k] of Object.entries(FAL_ERROR_TYPES)) {
    assert.ok((ERROR_CATEGORIES as readonly string[]).includes(k.category), type);
    if (k.status >= 500) assert.equal(k.billed, 'no', `${type}: fal does not bill server errors`);
    if (k.shape === 'model') assert.deepEqual([k.status, k.retryable, k.billed], [422, false, 'maybe'], type);
    const v = verdictOf({ status: k.status, type });
    assert.equal(v.retry, k.retryable && k.billed === 'no', type);
    assert.equal(v.category, k.category, type);
  }
  assert.deepEqual(verdictOf({ status: 500, type: 'runner_server_error' }), { type: 'runner_server_error', category: 'fal_transient', retry: true, billed: 'no', startTimeout: false });
  assert.equal(verdictOf({ status: 422, type: 'content_policy_violation' }).category, 'content_policy');
  assert.equal(verdictOf({ status: 422, type: 'less_than_equal' }).category, 'input', "pydantic's own types are the input");
  assert.equal(verdictOf({ status: 503 }).retry, true, 'an untyped 5xx: fal did not bill it');
  assert.equal(verdictOf({ status: 500, type: 'runner_server_error', retryableHeader: false }).retry, false, 'X-Fal-Retryable: false wins');
  assert.equal(verdictOf({ status: 422, type: 'image_load_error', retryableHeader: true }).retry, false, 'a possibly billed failure is never retried');
  const start = verdictOf({ status: 504, type: 'request_timeout', timeoutType: 'user', retryableHeader: true });
  assert.deepEqual([start.type, start.category, start.retry, start.startTimeout], ['start_timeout', 'timeout', false, true]);
  assert.equal(categoryOfType('result_expired'), 'storage');
  assert.equal(categoryOfType('nonsense'), 'other');
  assert.deepEqual(parseCategories('input, fal_transient,input'), { ok: true, categories: ['input', 'fal_transient'] });
  assert.deepEqual(parseCategories('input,bogus'), { ok: false, bad: 'bogus' });
});

test("fal's words are read from headers first, then the body: X-Fal-Error-Type, X-Fal-Retryable (or X-Fal-Needs-Retry), error_type, detail[].type", () => {
  const h = (o: Record<string, string>) => new Headers(o);
  assert.deepEqual(falErrorInfo(500, h({ 'x-fal-error-type': 'runner_disconnected', 'x-fal-retryable': 'true' }), { detail: 'x', error_type: 'other' }), {
    status: 500,
    type: 'runner_disconnected',
    retryableHeader: true,
  });
  assert.deepEqual(falErrorInfo(503, h({ 'x-fal-needs-retry': '0' }), { detail: 'x', error_type: 'runner_scheduling_failure' }), {
    status: 503,
    type: 'runner_scheduling_failure',
    retryableHeader: false,
  });
  assert.deepEqual(falErrorInfo(422, undefined, { detail: [{ loc: ['body'], msg: 'm', type: 'image_too_small' }] }), { status: 422, type: 'image_too_small' });
  assert.deepEqual(webhookErrorInfo('Invalid status code: 500', { detail: 'crash', error_type: 'runner_server_error' }), { status: 500, type: 'runner_server_error' });
  assert.deepEqual(webhookErrorInfo(null, { detail: [{ type: 'content_policy_violation' }] }), { type: 'content_policy_violation' });
});

test('a 5xx through the client carries fal\'s error type and X-Fal-Retryable', NET, async () => {
  handler = (_req, res) =>
    void res
      .writeHead(500, { 'content-type': 'application/json', 'x-fal-error-type': 'runner_server_error', 'x-fal-retryable': 'true' })
      .end(JSON.stringify({ detail: 'crash', error_type: 'runner_server_error' }));
  const err = await submitError();
  assert.ok(err instanceof FalTransientError);
  assert.deepEqual(err.fal, { status: 500, type: 'runner_server_error', retryableHeader: true });
});

test('the start timeout (504, X-Fal-Request-Timeout-Type: user) is an answer, never retried: one call', NET, async () => {
  handler = (_req, res) =>
    void res
      .writeHead(504, { 'content-type': 'application/json', 'x-fal-request-timeout-type': 'user', 'x-fal-error-type': 'request_timeout' })
      .end(JSON.stringify({ detail: 'Request timed out', error_type: 'request_timeout' }));
  seen.length = 0;
  let err: Error | undefined;
  try {
    await createFal({ FAL_KEY: 'k', FAL_QUEUE_URL: base }).queue.result(ENDPOINT, { requestId: 'req-1' });
  } catch (e) {
    err = classifyFalError(e);
  }
  assert.ok(err instanceof FalStartTimeoutError);
  assert.equal(err.status, 504);
  assert.match(err.message, /^fal did not start it within QUEUE_DEADLINE_MS/);
  assert.equal(seen.length, 1);
  // The client's own ApiError (a fetch that let the 504 through) is read the same way.
  const viaClient = classifyFalError(Object.assign(new Error('x'), { status: 504, body: { detail: 'late' }, timeoutType: 'user' }));
  assert.ok(viaClient instanceof FalStartTimeoutError);
  // A 504 of fal's own (no user timeout type) stays transient.
  assert.ok(classifyFalError(Object.assign(new Error('x'), { status: 504, body: { detail: 'gw' } })) instanceof FalTransientError);
});
