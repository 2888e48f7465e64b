// A command loads what it uses: the context builds its S3 storage, fal client, queues and metrics on
// first use, and their packages are loaded then (core/lazyPackage.ts), so `status` of a running run
// loads Redis and not the AWS SDK, BullMQ, the fal client or prom-client. Loaded by `require`, each
// is the very module a static `import` gets (one copy a process), which holds only while the package
// is CommonJS under Node: checked here, so an upgrade that changes it fails a test, not production.
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { test } from 'node:test';
import { CLI, ROOT } from './helpers/cli.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack } from './helpers/stack.ts';

/** Every package src/ loads through lazyPackage(), by the name it passes: none of them is `status`'s. */
const LAZY = ['@aws-sdk/client-s3', '@aws-sdk/lib-storage', '@aws-sdk/s3-request-presigner', '@fal-ai/client', 'bullmq', 'pino-pretty', 'prom-client'];

test('every package loaded on first use is the same module whether required or imported', async () => {
  const require = createRequire(join(ROOT, 'src', 'core', 'lazyPackage.ts'));
  for (const name of LAZY) {
    const required = require(name) as Record<string, unknown>;
    const imported = (await import(name)) as Record<string, unknown>;
    const shared = Object.keys(imported).filter((k) => k !== 'default' && typeof required[k] === 'function');
    assert.ok(shared.length > 0, `${name}: its import names what require() gives`);
    for (const k of shared) assert.equal(imported[k], required[k], `${name}: ${k} is one object, required or imported (the package is CommonJS under Node)`);
  }
});

test('the list above is what src/ loads through lazyPackage()', () => {
  const found = execFileSync('grep', ['-rhoE', '--exclude=lazyPackage.ts', "lazyPackage<[^>]+>\\('[^']+'\\)", join(ROOT, 'src')], { encoding: 'utf8' })
    .split('\n')
    .filter(Boolean)
    .map((l) => /\('([^']+)'\)/.exec(l)![1]!);
  assert.deepEqual([...new Set(found)].sort(), [...LAZY].sort());
});

test('`status` of a running run loads Redis, not the AWS SDK, BullMQ, the fal client or prom-client', async () => {
  const t = await startTestStack({ workers: false, webhook: false });
  try {
    const face = await faceDataUri(1);
    const { runId } = await t.pb.startRun(await t.manifest('m.csv', `id,face_url\na,"${face}"\nb,"${face}"\n`));
    const file = join(t.dir, 'loaded.txt');
    const env = { ...process.env, ...t.local.env, LOADED_PACKAGES_FILE: file };
    const preload = join(ROOT, 'test', 'helpers', 'loadedPackages.mjs');
    const stdout = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, ['--import', preload, CLI, 'status', runId, '--json'], { env, timeout: 90_000 }, (err, out, errOut) => (err ? reject(new Error(`${err.message}\n${errOut}`)) : resolve(out))),
    );
    assert.equal((JSON.parse(stdout) as { runId: string; state: string }).state, 'running');
    const loaded = (await readFile(file, 'utf8')).split('\n');
    assert.ok(loaded.includes('ioredis'), `it read Redis with ioredis (loaded: ${loaded.join(', ')})`);
    assert.deepEqual(LAZY.filter((p) => loaded.includes(p)), [], 'packages a status of a running run does not use');
  } finally {
    await t.stop();
  }
});
