// What a run is: the same manifest in the same place resumes its run; the same CSV bytes in another
// folder, pointing at other files, is another run (and an explicit --run-id refuses to mix them).
// Summaries and logs name the manifest by file name and sha256, never by the producer's paths.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { runLayout } from '../../src/core/layout.ts';
import { ManifestError } from '../../src/manifest/index.ts';
import { produceRun } from '../../src/producer/produce.ts';
import { waitForRun } from '../../src/producer/wait.ts';
import { facePng } from '../helpers/faces.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';

let t: TestStack;
const logs: string[] = [];
const CSV = 'id,face_url\nalice,faces/a.png\nbob,faces/b.png\n';

async function folder(name: string, seed: number): Promise<string> {
  const dir = join(t.dir, name);
  await mkdir(join(dir, 'faces'), { recursive: true });
  await writeFile(join(dir, 'faces', 'a.png'), await facePng(seed));
  await writeFile(join(dir, 'faces', 'b.png'), await facePng(seed + 1));
  await writeFile(join(dir, 'm.csv'), CSV);
  return join(dir, 'm.csv');
}

before(async () => {
  t = await startTestStack();
  // Every log line of the producer and the workers, whatever LOG_LEVEL the stack runs at.
  t.ctx.logger = pino({ level: 'debug' }, new Writable({ write: (chunk: Buffer, _e, cb) => (logs.push(chunk.toString()), cb()) }));
});
after(() => t.stop());

test('the same CSV in two folders with different faces is two runs; each reruns into its own run', async () => {
  const a = await folder('studio-a', 10);
  const b = await folder('studio-b', 20);
  const first = await produceRun(t.ctx, a);
  const second = await produceRun(t.ctx, b);
  assert.notEqual(second.runId, first.runId, 'different faces, different run');
  assert.equal(second.resumed, false);

  const again = await produceRun(t.ctx, a);
  assert.deepEqual([again.runId, again.resumed], [first.runId, true], 'a rerun in the same place resumes');

  // The folder copied elsewhere with the same files is the same work: it resumes too.
  await cp(join(t.dir, 'studio-a'), join(t.dir, 'studio-a-copy'), { recursive: true });
  const copy = await produceRun(t.ctx, join(t.dir, 'studio-a-copy', 'm.csv'));
  assert.deepEqual([copy.runId, copy.resumed], [first.runId, true]);

  await assert.rejects(produceRun(t.ctx, b, { runId: first.runId }), (err: Error) => {
    assert.ok(err instanceof ManifestError);
    assert.match(err.message, new RegExp(`^run ${first.runId} was started from the same manifest pointing at other local faces`));
    return true;
  });

  // Each run stored its own folder's faces.
  for (const [res, dir] of [[first, 'studio-a'], [second, 'studio-b']] as const) {
    await waitForRun(t.ctx, res.runId, { timeoutMs: 60_000 });
    const chunks: Buffer[] = [];
    for await (const c of await t.ctx.storage.getStream(`${runLayout(t.ctx.cfg.S3_PREFIX, res.runId).base}inputs/alice.png`)) chunks.push(c as Buffer);
    assert.ok(Buffer.concat(chunks).equals(await readFile(join(t.dir, dir, 'faces', 'a.png'))), `${dir}'s face`);
  }
});

test("summary.json and the logs name the manifest by file name and sha256, not the producer's path", async () => {
  const path = await folder('private-folder-of-the-producer', 30);
  const { runId } = await produceRun(t.ctx, path);
  await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
  const summary = (await t.ctx.storage.getJson<Record<string, unknown>>(runLayout(t.ctx.cfg.S3_PREFIX, runId).summary))!;
  assert.equal(summary.manifest, 'm.csv');
  assert.equal(summary.manifestSha256, createHash('sha256').update(CSV).digest('hex'));
  assert.ok(!JSON.stringify(summary).includes(t.dir), 'summary.json holds no producer path');
  assert.ok(logs.some((l) => l.includes('"milestone":"started"')) && logs.some((l) => l.includes('"milestone":"finished"')), 'the run was logged');
  const leaking = logs.filter((l) => l.includes('private-folder-of-the-producer') || l.includes(t.dir));
  assert.deepEqual(leaking, []);
});
