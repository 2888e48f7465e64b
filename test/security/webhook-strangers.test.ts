// Webhooks from strangers. fal signs every account's webhooks with the same keys, so a correctly signed
// webhook may come from anyone who put our URL in their own fal request. Such a webhook must not claim
// a row by naming it in the URL (only a token we minted may), must not be stored, and what we do store
// stays small in Redis. Real redis-server, s3rver, the emulator (its signing key signs the strangers'
// webhooks, exactly as fal would) and the real receiver.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { loadConfig } from '../../src/core/config.ts';
import { jobIds } from '../../src/core/queues.ts';
import { runPolicyFrom } from '../../src/core/runPolicy.ts';
import { createSigningKey } from '../../src/emulator/keys.ts';
import { startWebhookServer } from '../../src/webhook/server.ts';
import { webhookUrlFor } from '../../src/worker/submit.ts';
import { faceDataUri } from '../helpers/faces.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';
import { falBody, postSigned, until } from './helpers.ts';

const key = createSigningKey();
const RUN = 'victim-run';
let t: TestStack;
let hookUrl: string;
let line = 0;

/** A row of RUN whose submission is in flight (attempt recorded, fal's answer not yet): what a stranger would aim at. */
async function rowAwaitingSubmitAnswer(rowKey: string): Promise<number> {
  const claim = await t.ctx.rows.claimSubmit(RUN, rowKey, ++line, { faceUrl: 'https://example.com/f.png', faceKind: 'http', input: {}, extra: {} });
  assert.equal(claim.outcome, 'submit');
  return (claim as { attempt: number }).attempt;
}

const jobCount = async () => Object.values(await t.ctx.queues.results.getJobCounts()).reduce((a, b) => a + b, 0);
const okPayload = (url: string) => ({ images: [{ url, content_type: 'image/png', width: 8, height: 8 }], seed: 1 });

before(async () => {
  t = await startTestStack({ workers: false, emulator: { signingKey: key } });
  hookUrl = t.ctx.cfg.webhookUrl;
  await t.ctx.rows.createRun({ runId: RUN, manifest: 'm.csv', manifestKey: 'm.csv', options: {}, policy: runPolicyFrom(t.ctx.cfg) });
});
after(() => t.stop());

describe("a stranger's correctly signed webhook", () => {
  test("sent by fal for the stranger's own request, naming our pending row in the URL → refused, nothing stored, row untouched", async () => {
    const attempt = await rowAwaitingSubmitAnswer('k-ok');
    const before = await jobCount();
    // The stranger submits their own request to fal with our URL and our row's run/row/attempt.
    const url = `${hookUrl}?${new URLSearchParams({ run: RUN, row: 'k-ok', attempt: String(attempt) })}`;
    const emu = t.local.emulator!.url;
    const res = await fetch(`${emu}/fal-ai/flux-2-lora-gallery/face-to-full-portrait?fal_webhook=${encodeURIComponent(url)}`, {
      method: 'POST',
      headers: { authorization: 'Key stranger-key', 'content-type': 'application/json' },
      body: JSON.stringify({ image_urls: [await faceDataUri(3)] }),
    });
    assert.equal(res.status, 200);
    const { request_id: strangerRequest } = (await res.json()) as { request_id: string };
    const inspect = async () => ((await (await fetch(`${emu}/_emulator/requests/${strangerRequest}`)).json()) as { webhookAttempts: { status?: number }[] }).webhookAttempts;
    await until(async () => (await inspect()).some((a) => a.status !== undefined), "fal's delivery of the stranger's webhook");
    const [first] = await inspect();
    assert.equal(first!.status, 403, 'the receiver refuses it');
    assert.equal(await jobCount(), before, 'no result job was recorded');
    const row = await t.ctx.rows.getRow(RUN, 'k-ok');
    assert.equal(row?.state, 'submitting');
    assert.deepEqual(row?.requestIds, []);
    assert.equal(await t.ctx.rows.lookupRequest(strangerRequest), undefined);
  });

  test('an ERROR one with the text the stranger chose → refused; the row is not failed', async () => {
    const attempt = await rowAwaitingSubmitAnswer('k-err');
    const before = await jobCount();
    const url = `${hookUrl}?run=${RUN}&row=k-err&attempt=${attempt}`;
    const r = await postSigned(url, key, { requestId: 'stranger-err', userId: 'stranger', body: falBody('stranger-err', 'ERROR', { detail: 'x' }, 'Your account is suspended: call +1 555 0100') });
    assert.equal(r.status, 403);
    assert.match(r.error ?? '', /not ours/);
    assert.equal(await jobCount(), before);
    assert.equal((await t.ctx.rows.getRow(RUN, 'k-err'))?.state, 'submitting');
  });

  test("a token copied from another row's or attempt's URL does not verify for this one", async () => {
    const attempt = await rowAwaitingSubmitAnswer('k-copy');
    const before = await jobCount();
    for (const [row, att] of [['other-row', attempt], ['k-copy', attempt + 1]] as const) {
      const stolen = new URL(webhookUrlFor(t.ctx, RUN, row, att)).searchParams.get('token')!;
      const url = `${hookUrl}?${new URLSearchParams({ run: RUN, row: 'k-copy', attempt: String(attempt), token: stolen })}`;
      const r = await postSigned(url, key, { requestId: `stranger-copy-${row}`, body: falBody(`stranger-copy-${row}`, 'OK', okPayload('https://example.com/x.png')) });
      assert.equal(r.status, 403, `token of ${row}/${att}`);
    }
    assert.equal(await jobCount(), before);
  });

  test('30 MiB ones (sync_mode-sized) are refused too: nothing reaches Redis or S3', async () => {
    const attempt = await rowAwaitingSubmitAnswer('k-big');
    const before = await jobCount();
    const big = falBody('stranger-big', 'OK', okPayload(`data:image/png;base64,${'A'.repeat(30 * 1024 * 1024)}`));
    const r = await postSigned(`${hookUrl}?run=${RUN}&row=k-big&attempt=${attempt}`, key, { requestId: 'stranger-big', userId: 'stranger', body: big });
    assert.equal(r.status, 403);
    assert.equal(await jobCount(), before);
    const staged: string[] = [];
    for await (const o of t.ctx.storage.list(`runs/${RUN}/`)) staged.push(o.key);
    assert.deepEqual(staged, []);
  });
});

describe('our own webhooks are still placed', () => {
  test('by the URL token, before the submit answer is recorded', async () => {
    const attempt = await rowAwaitingSubmitAnswer('k-own');
    const url = webhookUrlFor(t.ctx, RUN, 'k-own', attempt);
    assert.deepEqual([...new URL(url).searchParams.keys()], ['run', 'row', 'attempt', 'token']);
    const r = await postSigned(url, key, { requestId: 'own-1', body: falBody('own-1', 'OK', okPayload('https://example.com/1.png')) });
    assert.equal(r.status, 200);
    const job = await t.ctx.queues.results.getJob(jobIds.result('own-1', 'OK'));
    assert.deepEqual(job?.data.hint, { runId: RUN, key: 'k-own', attempt });
  });

  test('by a request id we recorded, whatever the URL says', async () => {
    const attempt = await rowAwaitingSubmitAnswer('k-rec');
    assert.equal(await t.ctx.rows.recordSubmit(RUN, 'k-rec', attempt, 'own-2', Date.now() + 60_000), 'ok');
    const r = await postSigned(hookUrl, key, { requestId: 'own-2', body: falBody('own-2', 'OK', okPayload('https://example.com/2.png')) });
    assert.equal(r.status, 200);
    const job = await t.ctx.queues.results.getJob(jobIds.result('own-2', 'OK'));
    assert.equal(job?.data.hint, undefined, 'no URL token: placed by the request id alone');
  });
});

test('FAL_USER_ID pins the fal account: a webhook signed for another user is refused even with a valid token', async () => {
  const cfg = loadConfig({ ...t.local.env, FAL_USER_ID: 'our-team' });
  const pinned = await startWebhookServer({ ...t.ctx, cfg }, 0, '127.0.0.1');
  try {
    const attempt = await rowAwaitingSubmitAnswer('k-pin');
    const url = webhookUrlFor(t.ctx, RUN, 'k-pin', attempt).replace(hookUrl, `http://127.0.0.1:${pinned.port}/fal/webhook`);
    const before = await jobCount();
    const other = await postSigned(url, key, { requestId: 'pin-1', userId: 'someone-else', body: falBody('pin-1', 'OK', okPayload('https://example.com/p.png')) });
    assert.equal(other.status, 403);
    assert.match(other.error ?? '', /FAL_USER_ID/);
    assert.equal(await jobCount(), before);
    assert.equal(pinned.counters.refused.user, 1);
    const ours = await postSigned(url, key, { requestId: 'pin-2', userId: 'our-team', body: falBody('pin-2', 'OK', okPayload('https://example.com/p.png')) });
    assert.equal(ours.status, 200);
  } finally {
    await pinned.close();
  }
});

test("request ids containing ':' are recorded (BullMQ job ids may not contain ':')", async () => {
  for (const [i, requestId] of ['fal:7e1c', 'a:b:c:d'].entries()) {
    const attempt = await rowAwaitingSubmitAnswer(`k-colon-${i}`);
    const r = await postSigned(webhookUrlFor(t.ctx, RUN, `k-colon-${i}`, attempt), key, { requestId, body: falBody(requestId, 'OK', okPayload('https://example.com/c.png')) });
    assert.equal(r.status, 200, requestId);
    const job = await t.ctx.queues.results.getJob(jobIds.result(requestId, 'OK'));
    assert.equal(job?.data.requestId, requestId);
    assert.ok(!job.id!.includes(':'));
  }
  assert.notEqual(jobIds.result('a:b', 'OK'), jobIds.result('a%3Ab', 'OK'), 'distinct request ids keep distinct job ids');
  assert.notEqual(jobIds.result('a~OK', 'OK'), jobIds.result('a', 'OK~OK'));
});

test('a payload nested thousands of levels deep is refused with a reason (4xx), not 503 forever', async () => {
  const attempt = await rowAwaitingSubmitAnswer('k-deep');
  const before = await jobCount();
  const deep = `${'['.repeat(20_000)}${']'.repeat(20_000)}`;
  const body = `{"request_id":"deep-1","status":"OK","error":null,"payload":{"images":${deep}}}`;
  const r = await postSigned(webhookUrlFor(t.ctx, RUN, 'k-deep', attempt), key, { requestId: 'deep-1', body });
  assert.equal(r.status, 422);
  assert.match(r.error ?? '', /nests deeper/);
  assert.equal(await jobCount(), before);
});
