// WEBHOOK_SECRET: required by the webhook and worker roles in production (one clear error naming it),
// generated once into the data dir by the embedded stack and reused, so URLs handed to fal before a
// restart still verify after it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { ConfigError, loadConfig, requireRoleVars } from '../../src/core/config.ts';
import { verifiedTarget } from '../../src/core/webhookToken.ts';
import { createPortraitBatch, runWebhook, runWorker } from '../../src/index.ts';
import { startLocalStack } from '../../src/local/stack.ts';
import { webhookSecretFor, WEBHOOK_SECRET_FILE } from '../../src/local/secret.ts';
import type { Context } from '../../src/core/context.ts';
import { webhookUrlFor } from '../../src/worker/submit.ts';

const CLI = fileURLToPath(new URL('../../bin/portrait-batch.js', import.meta.url));
const query = (url: string) => Object.fromEntries(new URL(url).searchParams);

test('the embedded stack generates the secret once per data dir: a rerun verifies the URLs of the first run', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pb-secret-'));
  try {
    // Real Redis/S3/fal are named, so only the configuration is built (nothing is started).
    const env = { REDIS_URL: 'redis://127.0.0.1:1', S3_ENDPOINT: 'http://127.0.0.1:1', FAL_QUEUE_URL: 'http://127.0.0.1:1', WEBHOOK_PORT: '8080' };
    const first = await startLocalStack({ dataDir: dir, env });
    await first.stop();
    const url = webhookUrlFor({ cfg: first.cfg } as Context, 'run-1', 'row-1', 2);
    const again = await startLocalStack({ dataDir: dir, env });
    await again.stop();
    assert.match(again.cfg.WEBHOOK_SECRET ?? '', /^[0-9a-f]{64}$/);
    assert.equal(again.cfg.WEBHOOK_SECRET, first.cfg.WEBHOOK_SECRET);
    assert.deepEqual(verifiedTarget(again.cfg.WEBHOOK_SECRET!, query(url)), { runId: 'run-1', key: 'row-1', attempt: 2 });
    assert.equal((await stat(join(dir, WEBHOOK_SECRET_FILE))).mode & 0o777, 0o600, 'readable by the owner only');
    const other = await mkdtemp(join(tmpdir(), 'pb-secret-'));
    try {
      assert.notEqual(await webhookSecretFor(other), first.cfg.WEBHOOK_SECRET, 'another data dir has its own');
      const [a, b] = await Promise.all([webhookSecretFor(join(other, 'x')), webhookSecretFor(join(other, 'x'))]);
      assert.equal(a, b, 'two stacks starting at once agree');
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('in production the webhook and worker roles refuse to start without WEBHOOK_SECRET, naming it (exit 3)', () => {
  for (const role of ['webhook', 'worker']) {
    const env = { PATH: process.env.PATH, REDIS_URL: 'redis://127.0.0.1:1', FAL_KEY: 'k', LOG_LEVEL: 'silent' };
    const r = spawnSync(process.execPath, [CLI, role], { env, encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 3, `${role}: ${r.stderr}`);
    assert.match(r.stderr, /WEBHOOK_SECRET: is required/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
  }
});

test('the roles as library calls: the variables a role needs are checked once, together, before anything is connected to', async () => {
  // Redis on port 1 answers nothing: a ConfigError (not a connection error) shows nothing was tried.
  const env = { REDIS_URL: 'redis://127.0.0.1:1', S3_ENDPOINT: 'http://127.0.0.1:1' };
  const refused = (role: string, problems: string[]) => (err: unknown) => {
    assert.ok(err instanceof ConfigError, `${role}: ${String(err)}`);
    assert.deepEqual(err.problems, problems);
    return true;
  };
  await assert.rejects(
    runWorker(createPortraitBatch(env, { name: 'worker' }), { log: () => undefined }),
    refused('worker', ['FAL_KEY: is required by the worker: it calls fal', 'WEBHOOK_SECRET: is required by the worker: it signs the webhook URLs given to fal']),
  );
  await assert.rejects(
    runWebhook(createPortraitBatch({ ...env, FAL_KEY: 'k' }, { name: 'webhook' }), { log: () => undefined }),
    refused('webhook', ['WEBHOOK_SECRET: is required by the webhook receiver: it verifies the tokens in webhook URLs']),
  );
  assert.doesNotThrow(() => requireRoleVars(loadConfig(env), 'scheduler'), 'the scheduler needs neither');
});
