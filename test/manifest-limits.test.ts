// Bounded by bytes at every door (#16): MAX_MANIFEST_BYTES (CSV text after gunzip, counted while it
// streams; blank lines and comments count) and MAX_MANIFEST_ROWS. Past either, the manifest is refused
// with the limit named — `run` exits 2, the library throws ManifestError, the drop folder moves it to
// failed/ with a .reason.txt — and nothing is submitted: no run, no job, nothing at fal.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { ManifestError } from '../src/index.ts';
import { startDropFolder } from '../src/triggers/dropFolder.ts';
import { runCli } from './helpers/cli.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

const LIMITS = { MAX_MANIFEST_ROWS: '5', MAX_MANIFEST_BYTES: '20000' };
let t: TestStack;
let face: string;

before(async () => {
  t = await startTestStack({ env: LIMITS });
  face = await faceDataUri(1);
});

after(async () => {
  await t?.stop();
});

const rows = (n: number) => `id,face_url\n${Array.from({ length: n }, (_, i) => `r${i},"${face}"`).join('\n')}\n`;

/** What a refused manifest must not change: runs, queued rows, submissions at fal. */
async function snapshot() {
  return { runs: (await t.pb.listRuns()).length, queued: await t.ctx.queues.submit.count(), submits: t.local.emulator!.stats().submits };
}

/** Nothing of a refused manifest reached Redis, the queues or fal. */
async function nothingSubmittedSince(before: Awaited<ReturnType<typeof snapshot>>): Promise<void> {
  assert.deepEqual(await snapshot(), before, 'no run recorded, no row queued, nothing at fal');
}

test('a manifest of more rows than MAX_MANIFEST_ROWS is refused naming the limit; one of exactly that many runs', async () => {
  const before = await snapshot();
  await assert.rejects(t.pb.startRun(await t.manifest('six.csv', rows(6))), (err: Error) => {
    assert.ok(err instanceof ManifestError);
    assert.match(err.message, /more than MAX_MANIFEST_ROWS \(5\) rows/);
    return true;
  });
  await nothingSubmittedSince(before);
  const { runId } = await t.pb.startRun(await t.manifest('five.csv', rows(5)));
  assert.equal((await t.pb.waitForRun(runId, { timeoutMs: 60_000 })).completed, 5);
});

test('blank lines count toward MAX_MANIFEST_BYTES, measured after gunzip: a small gzip of one row and 20 KB of blank lines is refused', async () => {
  const text = `id,face_url\nr0,"${face}"\n${'\n'.repeat(20_000)}`;
  const gz = gzipSync(text);
  const before = await snapshot();
  assert.ok(gz.length < 2000, 'the upload itself is small');
  await assert.rejects(t.pb.startRun(await t.manifest('blank.csv.gz', gz as unknown as string)), /larger than MAX_MANIFEST_BYTES \(20000 bytes of CSV text, after gunzip\)/);
  await nothingSubmittedSince(before);
});

test('`run` exits 2 naming the limit, with no stack trace', async () => {
  const manifest = await t.manifest('cli-six.csv', rows(6));
  const before = await snapshot();
  const res = await runCli(['run', manifest], t.local.env).exited;
  assert.equal(res.code, 2, res.stderr);
  assert.match(res.stderr, /MAX_MANIFEST_ROWS \(5\)/);
  assert.doesNotMatch(res.stderr, /\n\s+at /, 'no stack trace');
  await nothingSubmittedSince(before);
});

test('the drop folder moves a manifest past a limit to failed/ with a .reason.txt naming it', async () => {
  const before = await snapshot();
  await t.ctx.storage.upload('limits/incoming/big.csv.gz', gzipSync(`id,face_url\nr0,"${face}"\n${'\r\n'.repeat(20_000)}`), 'application/gzip');
  const folder = startDropFolder(t.pb, { prefix: 'limits/incoming/', pollMs: 1e9, settleMs: 0, claimMs: 5000 });
  try {
    await folder.pollOnce();
  } finally {
    await folder.close();
  }
  const reason = await t.ctx.storage.getText('limits/failed/big.csv.gz.reason.txt');
  assert.match(reason ?? '', /MAX_MANIFEST_BYTES/);
  assert.equal(await t.ctx.storage.getText('limits/incoming/big.csv.gz'), undefined, 'moved out of the drop folder');
  await nothingSubmittedSince(before);
});
