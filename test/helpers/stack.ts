// The shared test fixture: a real redis-server, the embedded S3 server and the fal emulator on
// loopback ports, with the webhook receiver and workers started in this process through the library.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DestinationStream } from 'pino';
import type { Context } from '../../src/core/context.ts';
import type { PolicyOverrides } from '../../src/core/policy.ts';
import type { EmulatorOptions } from '../../src/emulator/index.ts';
import type { PortraitBatch, RunningWebhook, RunningWorkers } from '../../src/index.ts';
import { startEmbeddedService } from '../../src/local/embedded.ts';
import type { LocalStack } from '../../src/local/stack.ts';

/** Short timings so reconciliation paths run within a test. */
export const TEST_DEFAULTS: Record<string, string> = {
  RECONCILE_INTERVAL_MS: '300',
  RECONCILE_GRACE_MS: '2000',
  JOB_LOCK_MS: '4000',
  SUBMIT_CONCURRENCY: '8',
  SUBMIT_RATE_PER_SECOND: '200',
  STORE_CONCURRENCY: '8',
  FAILURE_THRESHOLD_RATIO: '1',
  STORE_RETRY_DELAY_MS: '100',
  LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
  S3_BUCKET: 'portrait-test',
};

/** Retries come quickly in tests: the behaviour is the same, the waits are not. */
export const TEST_POLICY: PolicyOverrides = {
  submit: { backoff: { baseMs: 100, capMs: 800 }, newAttemptBackoff: { baseMs: 100, capMs: 800 }, pauseRecheckMs: 300 },
  results: { backoff: { capMs: 800 } },
  produce: { backoff: { baseMs: 100, capMs: 800 }, windowPollMs: 50 },
  finalize: { backoff: { baseMs: 100, capMs: 800 } },
  dependencies: { probe: { baseMs: 100, capMs: 500 }, probeTimeoutMs: 1000, recheckMs: 200 },
  waitPollMs: 100,
};

export interface TestStack {
  dir: string;
  local: LocalStack;
  /** The library handle: webhook and workers started unless asked not to. */
  pb: PortraitBatch;
  ctx: Context;
  webhook?: RunningWebhook;
  workers?: RunningWorkers;
  /** Writes a manifest file into the test's directory and returns its path. */
  manifest(name: string, text: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startTestStack(
  opts: {
    emulator?: EmulatorOptions;
    env?: Record<string, string>;
    webhook?: boolean;
    workers?: boolean;
    policy?: PolicyOverrides;
    log?: DestinationStream;
    /** Redis with its AOF (fsync always), for tests that crash and restart it. */
    persistentRedis?: boolean;
  } = {},
): Promise<TestStack> {
  const dir = await mkdtemp(join(tmpdir(), 'pb-test-'));
  const svc = await startEmbeddedService({
    dataDir: dir,
    env: opts.env ?? {},
    defaults: TEST_DEFAULTS,
    persistentRedis: opts.persistentRedis ?? false,
    // A fixed seed: every fault a test sets by rate decides the same way on every run.
    emulator: { sizeScale: 0.125, latencyMs: { min: 5, max: 30 }, slots: 8, seed: 1, ...opts.emulator },
    name: 'test',
    policy: { ...TEST_POLICY, ...opts.policy },
    webhook: opts.webhook,
    workers: opts.workers,
    log: opts.log,
  });
  return {
    dir,
    local: svc.stack,
    pb: svc.pb,
    ctx: svc.pb.context,
    webhook: svc.webhook,
    workers: svc.workers,
    async manifest(name, text) {
      const p = join(dir, name);
      await writeFile(p, text);
      return p;
    },
    async stop() {
      await svc.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
