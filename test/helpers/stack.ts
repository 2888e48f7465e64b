// The shared test fixture: a real redis-server, the embedded S3 server and the fal emulator on
// loopback ports, with the webhook receiver and workers started in this process on demand.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createContext, type Context } from '../../src/core/context.ts';
import type { EmulatorOptions } from '../../src/emulator/index.ts';
import { startLocalStack, type LocalStack } from '../../src/local/stack.ts';
import { startWebhookServer, type RunningWebhook } from '../../src/webhook/server.ts';
import { startWorkers, type RunningWorkers } from '../../src/worker/index.ts';

/** Short timings so reconciliation paths run within a test. */
export const TEST_DEFAULTS: Record<string, string> = {
  RECONCILE_INTERVAL_MS: '300',
  RECONCILE_GRACE_MS: '2000',
  JOB_LOCK_MS: '4000',
  SUBMIT_CONCURRENCY: '8',
  SUBMIT_RATE_PER_SECOND: '200',
  STORE_CONCURRENCY: '8',
  FAILURE_THRESHOLD_RATIO: '1',
  LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
  S3_BUCKET: 'portrait-test',
};

export interface TestStack {
  dir: string;
  local: LocalStack;
  ctx: Context;
  webhook?: RunningWebhook;
  workers?: RunningWorkers;
  /** Writes a manifest file into the test's directory and returns its path. */
  manifest(name: string, text: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startTestStack(
  opts: { emulator?: EmulatorOptions; env?: Record<string, string>; webhook?: boolean; workers?: boolean } = {},
): Promise<TestStack> {
  const dir = await mkdtemp(join(tmpdir(), 'pb-test-'));
  const local = await startLocalStack({
    dataDir: dir,
    env: opts.env ?? {},
    defaults: TEST_DEFAULTS,
    persistentRedis: false,
    emulator: { sizeScale: 0.125, latencyMs: { min: 5, max: 30 }, slots: 8, ...opts.emulator },
  });
  const ctx = createContext(local.cfg, 'test');
  await ctx.storage.ensureBucket();
  const webhook = opts.webhook === false ? undefined : await startWebhookServer(ctx, local.cfg.WEBHOOK_PORT, '127.0.0.1');
  const workers = opts.workers === false ? undefined : await startWorkers(ctx);
  return {
    dir,
    local,
    ctx,
    webhook,
    workers,
    async manifest(name, text) {
      const p = join(dir, name);
      await writeFile(p, text);
      return p;
    },
    async stop() {
      await workers?.close();
      await webhook?.close();
      await ctx.close();
      await local.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
