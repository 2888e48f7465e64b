// Results that fit: a result too large for fal's webhook (payload null + payload_error) is fetched
// with queue.result; a request that failed is described by fal's full answer from queue.result, not
// the status call's summary; every submit carries the object lifecycle and start timeout.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { produceRun } from '../src/producer/produce.ts';
import { waitForRun } from '../src/producer/wait.ts';
import { eventually } from './helpers/eventually.ts';
import { faceDataUri } from './helpers/faces.ts';
import { meta } from './helpers/runOutputs.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

async function manifest(t: TestStack, rows: number): Promise<string> {
  const face = await faceDataUri(2);
  return t.manifest(`r-${rows}.csv`, `${['id,face_url', ...Array.from({ length: rows }, (_, i) => `r${i},"${face}"`)].join('\n')}\n`);
}

test('a webhook whose payload was too large (payload null, payload_error) still completes its row', async () => {
  // Grace beyond the test: the webhook is the only way in, and it carries no images.
  const t = await startTestStack({ env: { RECONCILE_GRACE_MS: '600000' }, emulator: { maxWebhookPayloadBytes: 10 } });
  try {
    const { runId } = await produceRun(t.ctx, await manifest(t, 3));
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 30_000 });
    assert.deepEqual([run.completed, run.failed], [3, 0]);
    const stats = t.local.emulator!.stats();
    assert.equal(stats.webhookPayloadErrors, 3, 'every webhook came without its payload');
    assert.equal(stats.resultCalls, 3, 'each result fetched once with queue.result');
    assert.equal(stats.statusCalls, 0, 'not by the reconciler');
    const m = (await meta(t, runId, 'r0'))!;
    assert.equal(m.images.length, 1);
  } finally {
    await t.stop();
  }
});

test("a request that failed at fal, found by polling, fails its row with fal's full detail from queue.result", async () => {
  // No webhook ever arrives: the rows are found done (or failed) by the reconciler's polls.
  const t = await startTestStack({ emulator: { latencyMs: { min: 500, max: 500 }, faults: { webhookDropRate: 1 } } });
  try {
    const { runId } = await produceRun(t.ctx, await manifest(t, 2));
    // An input the manifest reader would refuse, queued by hand while the run is on: fal's runner refuses it (422).
    await t.ctx.queues.submit.add('submit', {
      runId,
      key: 'forged',
      line: 999,
      row: { faceUrl: await faceDataUri(2), faceKind: 'data', input: { num_images: 9 }, extra: {} },
    });
    // (The run itself never finishes: the forged row is not one of its manifest's rows.)
    const m = await eventually(() => meta(t, runId, 'forged'), "the forged row's metadata in S3", 30_000);
    assert.equal(m.status, 'failed');
    assert.match(m.error!, /\(422\): num_images: /, "fal's status code and its detail by field");
    const inspect = (await (await fetch(`${t.local.emulator!.url}/_emulator/requests/${m.request_id}`)).json()) as { status: string };
    assert.equal(inspect.status, 'COMPLETED');
  } finally {
    await t.stop();
  }
});

test('every submit asks fal to expire its outputs after 48 h and to give up on a request not started by QUEUE_DEADLINE_MS', async () => {
  const t = await startTestStack({ env: { QUEUE_DEADLINE_MS: '3600000' } });
  try {
    const { runId } = await produceRun(t.ctx, await manifest(t, 1));
    await waitForRun(t.ctx, runId, { timeoutMs: 30_000 });
    const m = (await meta(t, runId, 'r0'))!;
    const inspect = (await (await fetch(`${t.local.emulator!.url}/_emulator/requests/${m.request_id}`)).json()) as { falHeaders: Record<string, string> };
    assert.deepEqual(JSON.parse(inspect.falHeaders['x-fal-object-lifecycle-preference']!), { expiration_duration_seconds: 172800 });
    assert.equal(inspect.falHeaders['x-fal-request-timeout'], '3600');
  } finally {
    await t.stop();
  }
});
