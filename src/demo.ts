// `portrait-batch demo`: the whole service in one process on the embedded default — a private
// redis-server, the embedded S3 server, the fal emulator, the webhook receiver and the workers —
// runs a manifest, waits, and copies the run out with a contact sheet.
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { createContext } from './core/context.ts';
import { runLayout } from './core/layout.ts';
import { startLocalStack } from './local/stack.ts';
import { copyRunToDir, writeContactSheet } from './local/contactSheet.ts';
import { produceRun } from './producer/produce.ts';
import { waitForRun } from './producer/wait.ts';
import { startWebhookServer } from './webhook/server.ts';
import { startWorkers } from './worker/index.ts';

export interface DemoOptions {
  manifest?: string;
  dataDir?: string;
  log?: (line: string) => void;
}

export interface DemoResult {
  runId: string;
  state: string;
  total: number;
  completed: number;
  failed: number;
  rejected: number;
  canceled: number;
  outputDir: string;
}

/** Faster reconciliation than production defaults: the demo's fal is local and quick. */
export const EMBEDDED_DEFAULTS = { RECONCILE_INTERVAL_MS: '2000', RECONCILE_GRACE_MS: '15000', JOB_LOCK_MS: '10000', LOG_LEVEL: 'warn' };

export async function runDemo(opts: DemoOptions = {}): Promise<DemoResult> {
  const log = opts.log ?? (() => undefined);
  const dataDir = resolve(opts.dataDir ?? 'demo-data');
  const manifest = resolve(opts.manifest ?? 'examples/faces.csv');
  const stack = await startLocalStack({ dataDir, defaults: EMBEDDED_DEFAULTS });
  log(`stack: redis ${stack.cfg.REDIS_URL} · s3 ${stack.cfg.S3_ENDPOINT ?? 'AWS'} · fal ${stack.cfg.FAL_QUEUE_URL}`);
  const ctx = createContext(stack.cfg, 'demo');
  const webhook = await startWebhookServer(ctx, stack.cfg.WEBHOOK_PORT, '127.0.0.1');
  const workers = await startWorkers(ctx);
  try {
    const { runId, resumed } = await produceRun(ctx, manifest);
    log(`${resumed ? 'resuming' : 'started'} run ${runId}`);
    const run = await waitForRun(ctx, runId, {
      onProgress: (r, pause) => log(`  ${r.state}: ${r.completed} completed, ${r.failed} failed, ${r.rejected} rejected${pause ? ` (paused: ${pause})` : ''}`),
    });
    const outputDir = join(dataDir, 'runs', runId);
    const prefix = runLayout(stack.cfg.S3_PREFIX, runId).base;
    await rm(outputDir, { recursive: true, force: true });
    await copyRunToDir(ctx.storage, prefix, outputDir);
    const sheet = await writeContactSheet(outputDir, prefix, `portrait-batch run ${runId}`);
    log(`contact sheet: ${sheet}`);
    return {
      runId,
      state: run.state,
      total: run.total ?? 0,
      completed: run.completed,
      failed: run.failed,
      rejected: run.rejected,
      canceled: run.canceled,
      outputDir,
    };
  } finally {
    await workers.close();
    await webhook.close();
    await ctx.close();
    await stack.stop();
  }
}
