// Exact 64-bit seeds across the wires: a signed webhook whose prompt holds escaped quotes, read by the
// real receiver into Redis; a seed sent to and answered by the emulator through the real fal client.
// (The scanner's every number shape: exact-json.test.ts.)
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { createFal } from '../src/core/fal.ts';
import { jobIds, type ResultJob } from '../src/core/queues.ts';
import { mintWebhookToken, TOKEN_PARAM } from '../src/core/webhookToken.ts';
import { createSigningKey } from '../src/emulator/keys.ts';
import { parseFalWebhookBody } from '../src/webhook/app.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';
import { signedHeaders } from './security/helpers.ts';

const BIG = '17454220438242315174';
const MAX_U64 = '18446744073709551615';

describe('exact seeds across the wires', () => {
  const key = createSigningKey();
  let t: TestStack;
  before(async () => {
    t = await startTestStack({ workers: false, emulator: { signingKey: key } });
  });
  after(() => t.stop());

  test('parseFalWebhookBody: a prompt with an escaped quote before the seed keeps the seed exact', () => {
    for (const seedText of [BIG, '1.5', '2e3', '-7']) {
      const raw = Buffer.from(`{"request_id":"r1","status":"OK","payload":{"prompt":"6\\" tall","images":[],"seed":${seedText}},"error":null}`);
      const body = parseFalWebhookBody(raw);
      assert.ok(!('invalid' in body), `seed ${seedText}: parsed`);
      assert.deepEqual((body.payload as { seed: unknown }).seed, /^-?\d+$/.test(seedText) ? seedText : Number(seedText));
    }
  });

  test('the receiver records a signed webhook whose prompt has escaped quotes with its seed exact; a seed 1.5 is recorded, not refused', async () => {
    for (const seedText of [MAX_U64, '1.5']) {
      const requestId = randomUUID();
      const target = { runId: 'run-exact', key: `k${requestId.slice(0, 8)}`, attempt: 1 };
      const query = new URLSearchParams({ run: target.runId, row: target.key, attempt: '1', [TOKEN_PARAM]: mintWebhookToken(t.ctx.cfg.WEBHOOK_SECRET!, target) });
      const body = `{"request_id":"${requestId}","status":"OK","payload":{"prompt":"she is 6\\" tall \\\\","images":[{"url":"https://fal.media/files/x.png"}],"seed":${seedText}},"error":null}`;
      const res = await fetch(`${t.ctx.cfg.webhookUrl}?${query}`, { method: 'POST', headers: signedHeaders(key, { requestId, body }), body });
      assert.equal(res.status, 200, `seed ${seedText}: ${await res.text()}`);
      const job = await t.ctx.queues.results.getJob(jobIds.result(requestId, 'OK'));
      assert.ok(job, 'recorded');
      const payload = (job.data as ResultJob).payload as { seed: unknown; prompt: string };
      assert.equal(payload.prompt, 'she is 6" tall \\');
      assert.deepEqual(payload.seed, seedText === '1.5' ? 1.5 : seedText);
    }
  });

  test('the fal client: a 64-bit seed submitted and answered exactly, with a prompt full of quotes', async () => {
    const fal = createFal({ FAL_KEY: 'emulator-key', FAL_QUEUE_URL: t.local.emulator!.url });
    const prompt = 'a portrait, 6" tall, "seed": 1, C:\\';
    const input = { image_urls: [await faceDataUri(2)], prompt, seed: BIG };
    const { request_id } = await fal.queue.submit(t.ctx.cfg.FAL_ENDPOINT, { input: input as never });
    let status = '';
    for (let i = 0; i < 200 && status !== 'COMPLETED'; i++) {
      status = (await fal.queue.status(t.ctx.cfg.FAL_ENDPOINT, { requestId: request_id, logs: false })).status;
      if (status !== 'COMPLETED') await new Promise((r) => setTimeout(r, 25));
    }
    assert.equal(status, 'COMPLETED');
    const { data } = await fal.queue.result(t.ctx.cfg.FAL_ENDPOINT, { requestId: request_id });
    assert.deepEqual([(data as { seed: unknown }).seed, (data as { prompt: unknown }).prompt], [BIG, prompt]);
    const recorded = await (await fetch(`${t.local.emulator!.url}/_emulator/requests/${request_id}`)).text();
    assert.match(recorded, new RegExp(`"seed":${BIG}[,}]`), 'fal was sent the exact digits');
  });
});
