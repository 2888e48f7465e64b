// The audit is the chaos run's oracle, so it is tested on its own: a real finished run is corrupted in
// S3 one way at a time (a repeated report line, stray or missing image objects, a row fal accepted
// more often than its attempts, an attempt whose request id was never learned) and each corruption
// must show in its own figure, the others staying 0.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { auditRun, type AuditResult } from '../src/audit.ts';
import { runLayout, type RunLayout } from '../src/core/layout.ts';
import { produceRun } from '../src/producer/produce.ts';
import { waitForRun } from '../src/producer/wait.ts';
import type { RowMeta } from '../src/worker/flush.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

let t: TestStack;
let runId: string;
let layout: RunLayout;
let accepted: Record<string, number>;

before(async () => {
  t = await startTestStack();
  const face = await faceDataUri(4);
  const csv = ['id,face_url,num_images,image_size', `a,"${face}",1,`, `b,"${face}",2,`, `bad,"${face}",1,huge`].join('\n');
  ({ runId } = await produceRun(t.ctx, await t.manifest('audit.csv', `${csv}\n`)));
  const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
  assert.deepEqual([run.completed, run.rejected], [2, 1]);
  layout = runLayout(t.ctx.cfg.S3_PREFIX, runId);
  accepted = t.local.emulator!.stats().acceptedByRow;
});
after(() => t.stop());

const FIGURES = ['lost', 'duplicated', 'extraSubmits', 'ambiguousSubmits'] as const;
type Figure = (typeof FIGURES)[number];

async function audit(acceptedByRow = accepted): Promise<AuditResult> {
  return auditRun(t.ctx, runId, { acceptedByRow, verifyHashes: true });
}

/** Only `figure` is `count`; every other figure stays 0. */
function only(res: AuditResult, figure: Figure, count: number, problem?: RegExp) {
  assert.deepEqual(Object.fromEntries(FIGURES.map((f) => [f, res[f]])), Object.fromEntries(FIGURES.map((f) => [f, f === figure ? count : 0])));
  if (problem) assert.ok(res.problems.some((p) => problem.test(p)), `a problem matching ${problem}: ${JSON.stringify(res.problems)}`);
}

async function text(key: string): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of await t.ctx.storage.getStream(key)) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Applies a corruption, runs `check`, and puts S3 back as it was. */
async function corrupted(apply: () => Promise<() => Promise<void>>, check: () => Promise<void>): Promise<void> {
  const restore = await apply();
  try {
    await check();
  } finally {
    await restore();
  }
}

const putObject = (key: string) => async () => {
  await t.ctx.storage.upload(key, Buffer.from('not an image'), 'image/png');
  return async () => void (await t.ctx.storage.deletePrefix(key));
};

const meta = async (key: string) => (await t.ctx.storage.getJson<RowMeta>(layout.meta(key)))!;

test('the untouched run audits clean, with the counts of the run', async () => {
  const res = await audit();
  assert.deepEqual(res.problems, []);
  assert.deepEqual([res.rows, res.completed, res.rejected, res.failed, res.canceled], [3, 2, 1, 0, 0]);
  only(res, 'lost', 0);
});

test('a line repeated in report.csv is a duplicate', async () => {
  const original = await text(layout.report);
  const lines = original.trimEnd().split('\n');
  await corrupted(
    async () => {
      await t.ctx.storage.upload(layout.report, `${[...lines, lines[1]].join('\n')}\n`, 'text/csv');
      return async () => t.ctx.storage.upload(layout.report, original, 'text/csv');
    },
    async () => only(await audit(), 'duplicated', 1, /appears twice in report\.csv/),
  );
});

test('an extra image under a completed row is a duplicate', async () => {
  await corrupted(putObject(layout.image('a', 7, 'png')), async () => only(await audit(), 'duplicated', 1, /image objects beyond its completed outcome/));
});

test('images under a rejected row are a duplicate', async () => {
  await corrupted(putObject(layout.image('bad', 0, 'png')), async () => only(await audit(), 'duplicated', 1, /rejected but has 1 image objects/));
});

test('an object under a key that is no row of the manifest is a duplicate', async () => {
  await corrupted(putObject(layout.image('stranger', 0, 'png')), async () => only(await audit(), 'duplicated', 1, /under stranger, which is no row/));
});

test('a row fal accepted more often than its recorded attempts is an extra submit', async () => {
  only(await audit({ ...accepted, [`${runId}/b`]: 2 }), 'extraSubmits', 1, /fal accepted 2 submissions, 1 attempts recorded/);
});

test('an image listed in the metadata but gone from S3, or not matching its sha256, is lost', async () => {
  const img = (await meta('b')).images[1]!;
  const bytes: Buffer[] = [];
  for await (const c of await t.ctx.storage.getStream(img.key)) bytes.push(c as Buffer);
  const restore = async () => t.ctx.storage.upload(img.key, Buffer.concat(bytes), img.content_type);
  await corrupted(
    async () => {
      await t.ctx.storage.deletePrefix(img.key);
      return restore;
    },
    // Counted twice: missing from S3, and its hash cannot be checked.
    async () => only(await audit(), 'lost', 2, /is listed but not in S3/),
  );
  await corrupted(
    async () => {
      await t.ctx.storage.upload(img.key, Buffer.from('other bytes'), img.content_type);
      return restore;
    },
    async () => only(await audit(), 'lost', 1, /does not match its sha256/),
  );
  only(await audit(), 'lost', 0);
});

test('a report line missing its row is lost', async () => {
  const original = await text(layout.report);
  const lines = original.trimEnd().split('\n');
  await corrupted(
    async () => {
      await t.ctx.storage.upload(layout.report, `${lines.filter((_, i) => i !== 2).join('\n')}\n`, 'text/csv');
      return async () => t.ctx.storage.upload(layout.report, original, 'text/csv');
    },
    async () => only(await audit(), 'lost', 1, /no final outcome in report\.csv \(missing\)/),
  );
});

test('an attempt without a request id (its submit answer lost, no webhook) is an ambiguous submit', async () => {
  const m = await meta('a');
  await corrupted(
    async () => {
      await t.ctx.storage.putJson(layout.meta('a'), { ...m, attempts: 2 });
      return async () => t.ctx.storage.putJson(layout.meta('a'), m);
    },
    async () => only(await audit({ ...accepted, [`${runId}/a`]: 2 }), 'ambiguousSubmits', 1),
  );
});
