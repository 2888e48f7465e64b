// Redis or S3 out of reach, a taken port, wrong S3 credentials, a missing bucket: every command
// fails (exit 1) with one sentence naming the variable and the address, and no stack trace — it
// does not hang. A running worker instead logs a Redis outage and carries on when Redis is back.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { freePort } from '../../src/local/ports.ts';
import { startRedisServer, type RunningRedis } from '../../src/local/redisServer.ts';
import { S3RVER_CREDENTIALS, startS3Server, type RunningS3 } from '../../src/local/s3Server.ts';
import { hasStack, lines, runCli } from '../helpers/cli.ts';

let dir: string;
let redis: RunningRedis;
let s3: RunningS3;
let closedPort: number;
const BUCKET = 'pb-reach';

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pb-reach-'));
  redis = await startRedisServer({ dir: join(dir, 'redis'), persistent: false });
  s3 = await startS3Server({ dir: join(dir, 's3'), buckets: [BUCKET] });
  closedPort = await freePort(); // nothing listens there
});
after(async () => {
  await redis.stop();
  await s3.close();
  await rm(dir, { recursive: true, force: true });
});

const good = () => ({
  REDIS_URL: redis.url,
  S3_ENDPOINT: s3.endpoint,
  S3_FORCE_PATH_STYLE: 'true',
  S3_BUCKET: BUCKET,
  FAL_KEY: 'test-key',
  WEBHOOK_SECRET: 'test-webhook-secret-0123456789abcdef',
  ...S3RVER_CREDENTIALS,
});

/** Runs the CLI to its exit and checks: exit 1, one line on stderr matching every pattern, no stack. */
async function failsWithOneSentence(args: string[], env: Record<string, string>, ...patterns: RegExp[]): Promise<void> {
  const r = await runCli(args, env).exited;
  const errLines = lines(r.stderr);
  assert.equal(r.code, 1, `exit code (stderr: ${r.stderr})`);
  assert.equal(errLines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  for (const p of patterns) assert.match(errLines[0]!, p);
  assert.ok(!hasStack(r.stderr), 'no stack trace');

}

describe('Redis out of reach', { concurrency: true, timeout: 60_000 }, () => {
  const bad = () => ({ ...good(), REDIS_URL: `redis://127.0.0.1:${closedPort}` });
  const names = () => [/REDIS_URL/, new RegExp(`127\\.0\\.0\\.1:${closedPort}`)];
  test('status fails with one sentence', () => failsWithOneSentence(['status', 'some-run'], bad(), ...names()));
  test('run fails with one sentence', () => failsWithOneSentence(['run', 'examples/faces.csv'], bad(), ...names()));
  test('worker fails with one sentence', () => failsWithOneSentence(['worker'], bad(), ...names()));
  test('webhook fails with one sentence', () => failsWithOneSentence(['webhook'], { ...bad(), WEBHOOK_PORT: '0' }, ...names()));
  test('demo fails with one sentence', async () => {
    const data = await mkdtemp(join(tmpdir(), 'pb-reach-demo-'));
    try {
      await failsWithOneSentence(['demo', '--data-dir', data], { REDIS_URL: `redis://127.0.0.1:${closedPort}` }, ...names());
    } finally {
      await rm(data, { recursive: true, force: true });
    }
  });
});

describe('S3 problems', { concurrency: true, timeout: 60_000 }, () => {
  test('S3 out of reach: run names S3_ENDPOINT and the address', () =>
    failsWithOneSentence(['run', 'examples/faces.csv'], { ...good(), S3_ENDPOINT: `http://127.0.0.1:${closedPort}` }, /S3_ENDPOINT/, new RegExp(`127\\.0\\.0\\.1:${closedPort}`)));
  test('S3 out of reach: worker names S3_ENDPOINT and the address', () =>
    failsWithOneSentence(['worker'], { ...good(), S3_ENDPOINT: `http://127.0.0.1:${closedPort}` }, /S3_ENDPOINT/, new RegExp(`127\\.0\\.0\\.1:${closedPort}`)));
  test('wrong S3 credentials are named', () =>
    failsWithOneSentence(['worker'], { ...good(), AWS_ACCESS_KEY_ID: 'WRONGKEY', AWS_SECRET_ACCESS_KEY: 'wrong-secret' }, /AWS_ACCESS_KEY_ID/, /refused/, /127\.0\.0\.1:\d+/));
  test('a missing bucket is named', () => failsWithOneSentence(['run', 'examples/faces.csv'], { ...good(), S3_BUCKET: 'no-such-bucket' }, /S3_BUCKET/, /no-such-bucket/, /does not exist/));
});

test('webhook: a port already in use is named', { timeout: 60_000 }, async () => {
  const taken: Server = createServer();
  await new Promise<void>((r) => taken.listen(0, '0.0.0.0', r));
  const port = (taken.address() as { port: number }).port;
  try {
    await failsWithOneSentence(['webhook'], { ...good(), WEBHOOK_PORT: String(port) }, /WEBHOOK_PORT/, new RegExp(`port ${port}`), /already in use/);
  } finally {
    taken.close();
  }
});

test('a failing command prints its stack only at LOG_LEVEL=debug', { timeout: 60_000 }, async () => {
  const r = await runCli(['run', 'examples/faces.csv'], { ...good(), S3_BUCKET: 'no-such-bucket', LOG_LEVEL: 'debug' }).exited;
  assert.equal(r.code, 1);
  assert.ok(hasStack(r.stderr), `a stack at debug level:\n${r.stderr}`);
});

test('a running worker logs a Redis outage, keeps retrying, and says when Redis is back', { timeout: 90_000 }, async (t) => {
  const own = await startRedisServer({ dir: join(dir, 'redis-outage'), persistent: false });
  // ADMIN_PORT 0: any free port (the default 9090 may be held by another process on this machine).
  const worker = runCli(['worker'], { ...good(), REDIS_URL: own.url, LOG_LEVEL: 'info', ADMIN_PORT: '0' });
  // Also when the test times out (its finally never runs then): no worker is left behind.
  t.after(() => void worker.child.kill('SIGKILL'));
  let restarted: RunningRedis | undefined;
  try {
    await worker.waitForLine(/workers running/);
    await own.stop();
    // The outage is one log line (JSON, on stderr) naming the variable and the address; the process stays up.
    const address = `127\\.0\\.0\\.1:${own.port}`;
    await waitFor(() => new RegExp(`Redis unreachable \\(REDIS_URL ${address}\\)`).test(worker.stderr()), worker);
    restarted = await startRedisServer({ dir: join(dir, 'redis-outage'), persistent: false, port: own.port });
    await waitFor(() => /Redis reachable again after \d+s/.test(worker.stderr()), worker);
    assert.equal(worker.child.exitCode, null, 'the worker is still running');
    assert.equal((worker.stderr().match(/Redis unreachable/g) ?? []).length, 1, 'one line per outage, not one per retry');
    assert.ok(!hasStack(worker.stderr()), `no stack on stderr:\n${worker.stderr()}`);
  } finally {
    worker.child.kill('SIGTERM');
    await worker.exited;
    await own.stop();
    await restarted?.stop();
  }
});

/** Resolves when `cond` holds (checked on every stderr chunk); rejects if the process exits first. */
function waitFor(cond: () => boolean, run: ReturnType<typeof runCli>): Promise<void> {
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!cond()) return;
      run.child.stderr!.off('data', check);
      resolve();
    };
    run.child.stderr!.on('data', check);
    void run.exited.then((r) => reject(new Error(`exited (${r.code}) while waiting:\n${r.stderr}`)));
    check();
  });
}
