// What a command prints is ours: the AWS SDK's NodeVersionSupportWarning (9 lines on every command
// under Node 20) is silenced; a plain answer is one line.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { startRedisServer } from '../src/local/redisServer.ts';
import { lines, runCli } from './helpers/cli.ts';

test('a command prints no AWS SDK NodeVersionSupportWarning', { timeout: 60_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pb-cli-out-'));
  const redis = await startRedisServer({ dir, persistent: false });
  try {
    const r = await runCli(['status', 'no-such-run'], { REDIS_URL: redis.url }).exited;
    assert.equal(r.code, 2, r.stderr);
    assert.ok(!/NodeVersionSupportWarning|AWS SDK for JavaScript/.test(r.stderr), r.stderr);
    // No S3 here: the answer says the run is not in Redis and why S3 could not be asked (an expired
    // run's summary.json lives there), in one line.
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(lines(r.stderr)[0]!, /^error: no run no-such-run in Redis, and S3 \(where an expired run's summary\.json would be\) could not be read: /);
  } finally {
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
