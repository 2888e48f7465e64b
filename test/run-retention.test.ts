// Redis holds what is in flight, plus O(1) a run (#16): rejected rows' reasons go to the run's report
// parts in S3, done bits are indexed by row ordinal (not file line), and a finished run's keys expire
// after RUN_RETENTION, `status` and `runs` then answering from its summary.json. On real redis-server,
// s3rver and the fal emulator.
import assert from 'node:assert/strict';
import { test, after, before } from 'node:test';
import { gzipSync } from 'node:zlib';
import { parse } from 'csv-parse/sync';
import type { Redis } from 'ioredis';
import { faceDataUri } from './helpers/faces.ts';
import { eventually } from './helpers/eventually.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

let t: TestStack;

before(async () => {
  t = await startTestStack();
});

after(async () => {
  await t?.stop();
});

/** Every key naming the run (its own `pb:run:<id>*` keys, its rows, its BullMQ jobs) and their bytes (MEMORY USAGE). */
async function runFootprint(redis: Redis, runId: string, counted: (key: string) => boolean = () => true): Promise<{ keys: string[]; bytes: number; sizes: string[] }> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `*${runId}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch.filter(counted));
  } while (cursor !== '0');
  let bytes = 0;
  const sizes: string[] = [];
  for (const k of keys.sort()) {
    const n = Number((await redis.call('MEMORY', 'USAGE', k, 'SAMPLES', '0')) ?? 0);
    bytes += n;
    sizes.push(`${k} ${n} B`);
  }
  return { keys, bytes, sizes };
}

/** The report's lines whose line number is `wanted`, as records. */
async function reportLines(runId: string, wanted: (line: number) => boolean): Promise<Record<string, string>[]> {
  const text = (await t.ctx.storage.getText(`runs/${runId}/report.csv`))!;
  return (parse(text, { columns: true }) as Record<string, string>[]).filter((r) => wanted(Number(r.line)));
}

const ROWS = 100_000;

test(`a manifest of ${ROWS} rejected rows (a 0.1 MB gzip) leaves under 2 KB in Redis once finished; the report still names each row's column and reason`, { timeout: 180_000 }, async () => {
  const manifest = await t.manifest('rejected.csv.gz', gzipSync(`face_url\n${'javascript:x\n'.repeat(ROWS)}`) as unknown as string);
  const { runId } = await t.pb.startRun(manifest);
  const status = await t.pb.waitForRun(runId, { timeoutMs: 170_000 });
  assert.deepEqual([status.state, status.total, status.rejected, status.completed], ['finished', ROWS, ROWS, 0]);

  const { bytes, sizes } = await runFootprint(t.ctx.redis, runId);
  assert.ok(bytes < 2048, `${bytes} bytes in Redis after the run (${sizes.join(', ')})`);
  assert.equal(await t.ctx.redis.exists(`pb:run:${runId}:rejected`), 0, 'no hash of rejected reasons');

  // The report keeps each row: its line, the column and the reason (from the report parts).
  const [first, last] = await reportLines(runId, (l) => l === 2 || l === ROWS + 1);
  assert.equal(first!.status, 'rejected');
  assert.match(first!.error!, /^face_url: /);
  assert.deepEqual([first!.line, last!.line, last!.status, last!.error_category], ['2', String(ROWS + 1), 'rejected', 'input']);
});

test('a gzip of a header, 64 MiB of blank lines and one row leaves under 2 KB in Redis: the done bit is the row ordinal, the report keeps its line', { timeout: 180_000 }, async () => {
  const face = await faceDataUri(7);
  const text = `id,face_url\n${'\n'.repeat(64 * 1024 * 1024)}far,"${face}"\n`;
  const manifest = await t.manifest('blank.csv.gz', gzipSync(text) as unknown as string);
  const { runId } = await t.pb.startRun(manifest);
  const status = await t.pb.waitForRun(runId, { timeoutMs: 170_000 });
  assert.deepEqual([status.state, status.completed], ['finished', 1]);

  // The face's fal-storage copy is cached per face, not per run, and expires with that copy (checked below).
  const { bytes, sizes } = await runFootprint(t.ctx.redis, runId, (k) => !k.startsWith('pb:falfile:'));
  assert.ok(bytes < 2048, `${bytes} bytes in Redis after the run (${sizes.join(', ')})`);
  for (const k of (await runFootprint(t.ctx.redis, runId)).keys) assert.ok((await t.ctx.redis.ttl(k)) > 0, `${k} expires`);
  const [row] = await reportLines(runId, (l) => l === 64 * 1024 * 1024 + 2);
  assert.equal(row?.status, 'completed', 'the report names the row by its line');
});

test('done bits are indexed by the rows\' ordinals, not their lines', async () => {
  // They still make counting idempotent (row-state.test.ts checks each transition).
  const face = await faceDataUri(2);
  const manifest = await t.manifest('two.csv', `id,face_url\n\n\na,"${face}"\n\nb,"${face}"\n`);
  const { runId } = await t.pb.startRun(manifest);
  const status = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
  assert.equal(status.completed, 2);
  const done = await t.ctx.redis.getBuffer(`pb:run:${runId}:done`);
  // Ordinals 1 and 2 (bits 1, 2 of the first byte), not lines 4 and 6.
  assert.deepEqual([...(done ?? Buffer.alloc(0))], [0b0110_0000]);
});

test('every key of a finished run expires after RUN_RETENTION; status and runs then answer from summary.json', { timeout: 120_000 }, async () => {
  const s = await startTestStack({ env: { RUN_RETENTION: '2s' } });
  try {
    const face = await faceDataUri(3);
    const manifest = await s.manifest('expire.csv', `id,face_url\na,"${face}"\nb,javascript:x\n`);
    const { runId } = await s.pb.startRun(manifest);
    const finished = await s.pb.waitForRun(runId, { timeoutMs: 60_000 });
    assert.deepEqual([finished.state, finished.completed, finished.rejected], ['finished', 1, 1]);
    const runKeys = (await runFootprint(s.ctx.redis, runId)).keys.filter((k) => k.startsWith(`pb:run:${runId}`));
    assert.ok(runKeys.includes(`pb:run:${runId}`));
    for (const k of runKeys) {
      const ttl = await s.ctx.redis.pttl(k);
      assert.ok(ttl > 0 && ttl <= 2000, `${k} expires within RUN_RETENTION (pttl ${ttl})`);
    }

    await eventually(async () => (await s.ctx.redis.exists(...runKeys)) === 0, 'the run keys to expire', 10_000);
    const status = await s.pb.status(runId);
    assert.ok(status, 'an expired run is still answered');
    assert.deepEqual(
      [status.runId, status.state, status.total, status.completed, status.rejected, status.inFlight, status.finishedAt],
      [runId, 'finished', 2, 1, 1, 0, finished.finishedAt],
    );
    assert.match(status.report ?? '', new RegExp(`runs/${runId}/report\\.csv$`));
    const listed = (await s.pb.listRuns()).find((r) => r.runId === runId);
    assert.deepEqual([listed?.state, listed?.completed, listed?.rejected, listed?.finishedAt], ['finished', 1, 1, finished.finishedAt]);
    assert.equal(await s.pb.status('never-was'), undefined);

    // The same manifest again is still that run: nothing is made or submitted again.
    const submits = s.local.emulator!.stats().submits;
    const again = await s.pb.startRun(manifest);
    assert.deepEqual([again.runId, again.resumed, again.total], [runId, true, 2]);
    assert.equal(await s.ctx.redis.exists(`pb:run:${runId}`), 0, 'no run recorded again');
    assert.equal(s.local.emulator!.stats().submits, submits);
  } finally {
    await s.stop();
  }
});
