// The embedded S3 server (s3rver, with its vulnerable fast-xml-parser and dicer) is for the demo and
// the tests only: a production install does not contain it, and without it the embedded stack says
// in one sentence what to do instead of failing to load.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { hasStack, lines, ROOT, runCli } from '../helpers/cli.ts';

test('a production install (npm ci --omit=dev) has no s3rver, fast-xml-parser or dicer, nor a TypeScript loader', { timeout: 60_000 }, async () => {
  const { stdout } = await promisify(execFile)('npm', ['ls', '--omit=dev', '--all', '--parseable', 's3rver', 'fast-xml-parser', 'dicer', 'busboy', 'tsx', 'typescript', 'esbuild'], { cwd: ROOT }).catch(
    (err: { stdout: string }) => ({ stdout: err.stdout }),
  );
  const found = lines(stdout).filter((l) => l !== ROOT);
  assert.deepEqual(found, [], `production dependency tree contains:\n${found.join('\n')}`);
});

/** A loader hook that makes `s3rver` unresolvable, as in an image installed without dev dependencies. */
const WITHOUT_S3RVER = `data:text/javascript,${encodeURIComponent(
  `import { register } from 'node:module';
register('data:text/javascript,' + encodeURIComponent('export async function resolve(s, c, next) { if (s === "s3rver") { const e = new Error("Cannot find package s3rver"); e.code = "ERR_MODULE_NOT_FOUND"; throw e; } return next(s, c); }'));`,
)}`;

test('without s3rver, the embedded stack says to set S3_ENDPOINT or install dev dependencies', { timeout: 60_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pb-nos3rver-'));
  try {
    const r = await runCli(['demo', '--data-dir', dir], {}, { nodeArgs: ['--import', WITHOUT_S3RVER] }).exited;
    assert.equal(r.code, 1, r.stderr);
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(r.stderr, /s3rver\) is not installed here: set S3_ENDPOINT .*install the dev dependencies/);
    assert.ok(!hasStack(r.stderr), r.stderr);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
