// The report is uploaded while it is being written. When writing it fails part-way (here: every S3
// read fails), the upload is abandoned and awaited before the failure is reported: no truncated
// report.csv is stored, and no upload promise is left to reject unobserved (which kills a worker).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { loadConfig } from '../../src/core/config.ts';
import { createContext, type Context } from '../../src/core/context.ts';
import { createMetrics } from '../../src/ops/metrics.ts';
import { runLayout } from '../../src/core/layout.ts';
import { startFaultProxy, type RunningFaultProxy } from '../../src/local/faultProxy.ts';
import { produceRun } from '../../src/producer/produce.ts';
import { writeRunReport } from '../../src/worker/finalize.ts';
import { faceDataUri } from '../helpers/faces.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';

let t: TestStack;
let proxy: RunningFaultProxy;
let readsFail: Context;

before(async () => {
  t = await startTestStack({ workers: false, webhook: false });
  // Every GET through this proxy is answered 503/500; writes pass.
  proxy = await startFaultProxy({ target: t.local.cfg.S3_ENDPOINT!, failureRate: 1, methods: ['GET'] });
  readsFail = createContext(loadConfig({ ...t.local.env, S3_ENDPOINT: proxy.url }), 'reads-fail', undefined, { metrics: () => createMetrics() });
});

after(async () => {
  await readsFail.close();
  await t.stop();
});

test('a report whose writing fails part-way is not stored at all', async () => {
  const { runId } = await produceRun(t.ctx, await t.manifest('m.csv', `id,face_url\na,"${await faceDataUri(1)}"\n`));
  await assert.rejects(writeRunReport(readsFail, runId));
  // Cut the S3 path at once: an upload still in flight now (one left unawaited) fails unobserved,
  // which fails this file; one that already got through is found below.
  await proxy.close();
  const layout = runLayout(t.ctx.cfg.S3_PREFIX, runId);
  const stored = [];
  for await (const o of t.ctx.storage.list(layout.report)) stored.push(o.key);
  assert.deepEqual(stored, [], 'no truncated report.csv');
  assert.equal((await t.ctx.rows.getRun(runId))?.finishedAt, undefined, 'the run is not marked finished');
});
