// Writes to disk stay inside their folder: `download <runId> <dir>` (and the demo's copy, which is the
// same call) writes a listed key only if it names a file inside <dir>. A key with `..`, an empty or
// absolute segment, a backslash or a drive letter is refused with its name; the rest is downloaded,
// and the CLI ends with exit 4 and the count. Real redis-server, s3rver, emulator and CLI.
//
// s3rver normalises `..` out of a key when it is written (`runs/r1/images/a/../../../../x` is stored
// as `x`), while AWS S3 and MinIO keep it: that key is put into the listing through Storage.list, the
// function the download lists with. Keys with a backslash or a drive letter are real objects in s3rver.
import assert from 'node:assert/strict';
import { mkdir, readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, test } from 'node:test';
import type { Context } from '../../src/core/context.ts';
import { runLayout } from '../../src/core/layout.ts';
import type { ListedObject } from '../../src/core/s3.ts';
import { downloadRun } from '../../src/control/outputs.ts';
import { containedPath, outputFile, pathRefusal } from '../../src/local/contained.ts';
import { faceDataUri } from '../helpers/faces.ts';
import { runCli } from '../helpers/cli.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';

let t: TestStack;
let runId = '';
let base = '';

before(async () => {
  t = await startTestStack();
  const rows = ['id,face_url', `a,"${await faceDataUri(1)}"`, `b,"${await faceDataUri(2)}"`];
  ({ runId } = await t.pb.startRun(await t.manifest('two.csv', `${rows.join('\n')}\n`)));
  const run = await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
  assert.equal(run.completed, 2);
  base = runLayout(t.ctx.cfg.S3_PREFIX, runId).base;
});
after(() => t.stop());

/** Every file under root, relative to it. */
async function filesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(root, { withFileTypes: true, recursive: true })) if (e.isFile()) out.push(relative(root, join(e.parentPath, e.name)));
  return out.sort();
}

test('a listed key with .. is refused by name, nothing is written outside <dir>, and the other files are downloaded', async () => {
  const evil = `${base}images/a/../../../../x`;
  // The listing S3 would give for a run holding that key: the run's real objects, plus it.
  const storage = Object.create(t.ctx.storage) as Context['storage'];
  storage.list = async function* (prefix: string, bucket?: string): AsyncGenerator<ListedObject> {
    yield* t.ctx.storage.list(prefix, bucket);
    yield { key: evil, size: 4, etag: 'e', lastModified: 0 } as ListedObject;
  };
  storage.getStream = (key: string, bucket?: string) => (key === evil ? Promise.resolve(Readable.from([Buffer.from('evil')])) : t.ctx.storage.getStream(key, bucket));
  const sandbox = join(t.dir, 'sandbox');
  const dir = join(sandbox, 'a', 'b', 'c', 'out');
  await mkdir(dir, { recursive: true });

  const res = await downloadRun({ ...t.ctx, storage }, runId, dir);
  const all = await filesUnder(sandbox);
  assert.deepEqual(all.filter((f) => !f.startsWith('a/b/c/out/')), [], 'nothing written outside <dir>');
  assert.deepEqual(res.refused, [{ key: evil, reason: `${JSON.stringify(evil)} has a .. segment: not written` }]);
  const inDir = await filesUnder(dir);
  for (const f of ['report.csv', 'summary.json', 'manifest.csv', 'index.html']) assert.ok(inDir.includes(f), `${f} downloaded: ${inDir.join(', ')}`);
  assert.equal(inDir.filter((f) => f.startsWith('images/')).length, 2, 'both portraits downloaded');
  assert.equal(res.files, inDir.length - 1, 'every listed file but the refused one (index.html is written after)');
});

test('the CLI downloads the rest of a run holding keys with a backslash or a drive letter, names each refused key, and exits 4 with the count', async () => {
  const bad = [`${base}images/C:/w.png`, `${base}images/b\\..\\..\\y.png`];
  for (const key of bad) await t.ctx.storage.putObject(key, 'not a portrait', 'image/png');
  const dir = join(t.dir, 'cli-out');
  const { code, stderr, stdout } = await runCli(['download', runId, dir], t.local.env).exited;
  assert.equal(code, 4, stderr);
  assert.match(stderr, new RegExp(`refused: ${JSON.stringify(JSON.stringify(bad[0]!)).slice(1, -1)} has a drive letter: not written`));
  assert.ok(stderr.includes(`refused: ${JSON.stringify(bad[1])} has a backslash: not written`), stderr);
  assert.match(stderr, /; 2 keys refused \(named above\), not written; open /);
  assert.equal(stdout, '');
  const files = await filesUnder(dir);
  assert.ok(files.includes('report.csv') && files.filter((f) => f.startsWith('images/')).length === 2, files.join(', '));
  assert.ok(!files.some((f) => f.includes('C:') || f.includes('\\')), files.join(', '));
});

test('containment: every unsafe name is refused, a plain one resolves inside the folder', () => {
  for (const [name, why] of [
    ['', 'is empty'],
    ['/etc/passwd', 'is an absolute path'],
    ['a//b', 'has an empty segment'],
    ['a/', 'has an empty segment'],
    ['./a', 'has a . segment'],
    ['a/../b', 'has a .. segment'],
    ['..', 'has a .. segment'],
    ['a\\b', 'has a backslash'],
    ['c:/x', 'has a drive letter'],
    ['a/\0', 'has a NUL byte'],
  ] as const) {
    assert.ok(pathRefusal(name)?.startsWith(why), `${JSON.stringify(name)}: ${pathRefusal(name)}`);
    assert.throws(() => containedPath('/srv/out', name, `runs/r/${name}`), (err: Error) => err.message.startsWith(JSON.stringify(`runs/r/${name}`)));
  }
  assert.equal(containedPath('/srv/out', 'images/k/0.png'), '/srv/out/images/k/0.png');
  assert.equal(outputFile('/tmp/x/report.csv'), '/tmp/x/report.csv');
  assert.throws(() => outputFile('/tmp/x/'), /names a folder, not a file/);
});
