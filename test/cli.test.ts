// The CLI's contracts: --json puts exactly one JSON object on stdout (logs and progress on stderr);
// bad arguments and unknown commands exit 2; `run --dry-run` validates and estimates with no Redis,
// S3 or fal; run control (runs, status, report, download, retry, cancel) on a real stack.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { freePort } from '../src/local/ports.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';

const CLI = fileURLToPath(new URL('../bin/portrait-batch.js', import.meta.url));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: string[], env: NodeJS.ProcessEnv): Promise<Result> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { env, timeout: 90_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** stdout is exactly one JSON object (one line). */
function oneJson(r: Result): Record<string, unknown> {
  const lines = r.stdout.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, `stdout holds one line, got: ${r.stdout.slice(0, 500)} / stderr: ${r.stderr.slice(0, 500)}`);
  const v = JSON.parse(lines[0]!) as unknown;
  assert.ok(v && typeof v === 'object' && !Array.isArray(v), 'an object');
  return v as Record<string, unknown>;
}

/** An environment that names no running service (a closed Redis port, no S3, no fal). */
async function noServices(): Promise<NodeJS.ProcessEnv> {
  const env: NodeJS.ProcessEnv = { ...process.env, REDIS_URL: `redis://127.0.0.1:${await freePort()}`, S3_ENDPOINT: `http://127.0.0.1:${await freePort()}`, LOG_LEVEL: 'info' };
  for (const k of ['FAL_QUEUE_URL', 'FAL_KEY', 'PRICE_PER_MEGAPIXEL', 'CURRENCY']) delete env[k];
  return env;
}

describe('without servers', () => {
  let dir: string;
  let env: NodeJS.ProcessEnv;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pb-cli-'));
    env = await noServices();
  });
  after(() => rm(dir, { recursive: true, force: true }));

  test('run --dry-run --json validates and estimates with nothing running', async () => {
    const face = await faceDataUri(1);
    const csv = [
      'id,face_url,image_size,num_images',
      `a,"${face}",square_hd,`, // 1 MP
      `b,"${face}",768x1024,2`, // 0.75 MP, billed 1 MP, 2 images
      `c,"${face}",2048x2048,`, // 4 MP
      `d,"${face}",,3`, // no size: 1 MP an image, 3 images
      `e,"${face}",huge,`, // rejected
    ].join('\n');
    const path = join(dir, 'estimate.csv');
    await writeFile(path, `${csv}\n`);
    const r = await cli(['run', path, '--dry-run', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const out = oneJson(r);
    assert.deepEqual(Object.keys(out), ['rows', 'valid', 'rejected', 'images', 'megapixels', 'estimatedCost', 'currency', 'unsizedRows']);
    assert.deepEqual(out, { rows: 5, valid: 4, rejected: 1, images: 7, megapixels: 10, estimatedCost: 0.21, currency: 'USD', unsizedRows: 1 });

    const priced = await cli(['run', path, '--dry-run', '--json'], { ...env, PRICE_PER_MEGAPIXEL: '0.5', CURRENCY: 'EUR' });
    assert.deepEqual([oneJson(priced).estimatedCost, oneJson(priced).currency], [5, 'EUR']);
    const human = await cli(['run', path, '--dry-run'], env);
    assert.equal(human.code, 0);
    assert.match(human.stdout, /5 rows: 4 valid, 1 rejected · 7 images · 10 MP · estimated 0\.21 USD/);
  });

  test('a broken manifest exits 2 with one sentence, and with --json still one object on stdout', async () => {
    const path = join(dir, 'noface.csv');
    await writeFile(path, 'id,photo\n1,x\n');
    const r = await cli(['run', path, '--dry-run', '--json'], env);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^error: no face_url column/m);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.equal(oneJson(r).exitCode, 2);
  });

  test('run names a wrong manifest path before it waits on Redis or S3 (exit 2)', async () => {
    for (const path of [join(dir, 'no-such.csv'), dir]) {
      const r = await cli(['run', path], env);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^error: manifest .+ does not exist or is not a file$/m);
      assert.doesNotMatch(r.stderr, /Redis|S3/, 'the path is the problem named, not the closed servers');
    }
  });

  test('unknown commands, missing arguments and bad option values exit 2', async () => {
    for (const args of [['frobnicate'], ['run'], ['status'], ['download', 'x'], ['run', 'm.csv', '--max-cost', 'lots'], ['run', 'm.csv', '--no-such-flag'], []]) {
      const r = await cli(args, env);
      assert.equal(r.code, 2, `${args.join(' ')} → ${r.code}: ${r.stderr}`);
    }
    assert.equal((await cli(['--help'], env)).code, 0);
    const json = await cli(['status', '--json'], env);
    assert.equal(json.code, 2);
    assert.equal(oneJson(json).exitCode, 2);
  });

  test('retry --only with a word that is no error category exits 2 naming it', async () => {
    const r = await cli(['retry', 'some-run', '--only', 'input,bogus'], env);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /"bogus" is not an error category \(one of input, content_policy, fal_transient, timeout, canceled, storage, other\)/);
  });
});

describe('on a stack', () => {
  let t: TestStack;
  let env: NodeJS.ProcessEnv;
  let manifest: string;
  let runId: string;
  before(async () => {
    t = await startTestStack();
    env = { ...process.env, ...t.local.env, LOG_LEVEL: 'info' };
    const face = await faceDataUri(2);
    manifest = await t.manifest('cli.csv', `id,face_url\n${Array.from({ length: 5 }, (_, i) => `c${i},"${face}"`).join('\n')}\n`);
  });
  after(() => t.stop());

  test('run --wait --json: JSON progress lines on stderr (no terminal), one JSON object on stdout', async () => {
    const r = await cli(['run', manifest, '--wait', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const out = oneJson(r);
    runId = String(out.runId);
    assert.deepEqual([out.state, out.completed, out.total], ['finished', 5, 5]);
    for (const k of ['elapsedSeconds', 'rowsPerSecond', 'etaSeconds', 'cost', 'estimatedCost', 'currency', 'pauseReason', 'stopReason']) assert.ok(k in out, k);
    const progress = r.stderr.split('\n').filter((l) => l.startsWith('{') && l.includes('"percent"'));
    assert.ok(progress.length >= 1, 'progress as JSON lines');
    assert.equal((JSON.parse(progress.at(-1)!) as { done: number }).done, 5);
  });

  test('runs, status, report, download and retry', async () => {
    const runs = oneJson(await cli(['runs', '--json'], env));
    const list = runs.runs as { runId: string; state: string; cost: number }[];
    assert.ok(list.some((r) => r.runId === runId && r.state === 'finished'));

    const status = await cli(['status', runId, '--json'], env);
    assert.deepEqual([status.code, oneJson(status).runId], [0, runId]);
    const missing = await cli(['status', 'no-such-run'], env);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /no run no-such-run/);

    const out = join(t.dir, 'report-copy.csv');
    assert.equal((await cli(['report', runId, '--out', out], env)).code, 0);
    assert.equal((await readFile(out, 'utf8')).split('\n').filter(Boolean).length, 6);
    const toStdout = await cli(['report', runId], env);
    assert.match(toStdout.stdout, /^line,id,row_key,face_url,status/);

    const dir = join(t.dir, 'download');
    const dl = oneJson(await cli(['download', runId, dir, '--json'], env));
    assert.equal(dl.dir, dir);
    assert.ok((await readdir(dir)).includes('index.html'));
    assert.equal((await readdir(join(dir, 'images'))).length, 5);

    const retry = await cli(['retry', runId], env);
    assert.equal(retry.code, 2);
    assert.match(retry.stderr, /has no failed rows to retry/);
  });

  test('run prints the id and returns; cancel ends the run', async () => {
    const face = await faceDataUri(4);
    const other = await t.manifest('cli-cancel.csv', `id,face_url\n${Array.from({ length: 3 }, (_, i) => `x${i},"${face}"`).join('\n')}\n`);
    const r = await cli(['run', other, '--run-id', 'cli-cancel'], env);
    assert.deepEqual([r.code, r.stdout], [0, 'cli-cancel\n']);
    const c = oneJson(await cli(['cancel', 'cli-cancel', '--json'], env));
    assert.equal(c.runId, 'cli-cancel');
    const done = await t.pb.waitForRun('cli-cancel', { timeoutMs: 30_000 });
    assert.ok(['canceled', 'finished'].includes(done.state));
  });
});
