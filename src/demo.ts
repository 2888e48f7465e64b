// `portrait-batch demo`: the whole service in one process on the embedded default — a private
// redis-server, the embedded S3 server, the fal emulator, the webhook receiver, the workers and the
// admin listener (dashboard, metrics, health) — runs a manifest, waits, and copies the run out with a
// contact sheet; with keepAlive it goes on serving until the callback resolves.
import { rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { containedPath } from './local/contained.ts';
import { startEmbeddedService } from './local/embedded.ts';
import type { PortraitBatch } from './index.ts';
import { TOKEN_PARAM } from './ops/dashboard/auth.ts';
import { watchInterruption } from './signals.ts';
import type { RunStatus } from './status.ts';

export interface DemoOptions {
  manifest?: string;
  dataDir?: string;
  log?: (line: string) => void;
  onProgress?: (s: RunStatus) => void;
  /** Called with the finished run while the stack still serves; the stack stops when it resolves. */
  keepAlive?: (pb: PortraitBatch, result: DemoResult) => Promise<void>;
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
  /** The run's dashboard page, signed in by its token (a query parameter: for this local demo only). */
  dashboardUrl: string | null;
  /** Where /metrics, /healthz and /readyz are served. */
  adminUrl: string | null;
}

/** Faster reconciliation than production defaults: the demo's fal is local and quick. */
export const EMBEDDED_DEFAULTS = { RECONCILE_INTERVAL_MS: '2000', RECONCILE_GRACE_MS: '15000', JOB_LOCK_MS: '10000', LOG_LEVEL: 'warn' };

export async function runDemo(opts: DemoOptions = {}): Promise<DemoResult> {
  const log = opts.log ?? (() => undefined);
  const dataDir = resolve(opts.dataDir ?? 'demo-data');
  const manifest = resolve(opts.manifest ?? 'examples/faces.csv');
  // Ctrl-C stops the demo cleanly: workers, receiver, then the stack (its private Redis included).
  const interruption = watchInterruption();
  const { stack, pb, admin, stop } = await startEmbeddedService({ dataDir, defaults: EMBEDDED_DEFAULTS, name: 'demo', admin: true }).catch((err: unknown) => {
    interruption.dispose();
    throw err;
  });
  log(`stack: redis ${stack.cfg.REDIS_URL} · s3 ${stack.cfg.S3_ENDPOINT ?? 'AWS'} · fal ${stack.cfg.FAL_QUEUE_URL}${admin ? ` · admin ${admin.url}` : ''}`);
  // The embedded stack always has a token (DASHBOARD_TOKEN, or one generated into the data dir).
  const token = pb.config.DASHBOARD_TOKEN;
  try {
    interruption.check();
    const { runId, resumed } = await interruption.race(pb.startRun(manifest));
    log(`${resumed ? 'resuming' : 'started'} run ${runId}`);
    if (admin && token) log(`dashboard: ${admin.url}/ui/runs/${encodeURIComponent(runId)} (token: DASHBOARD_TOKEN, or ${join(dataDir, 'dashboard-token')})`);
    const run = await interruption.race(pb.waitForRun(runId, { onProgress: opts.onProgress }));
    const outputDir = containedPath(join(dataDir, 'runs'), runId);
    await rm(outputDir, { recursive: true, force: true });
    const { contactSheet, refused } = await pb.download(runId, outputDir);
    for (const r of refused) log(`refused: ${r.reason}`);
    log(`contact sheet: ${contactSheet}`);
    const result: DemoResult = {
      runId,
      state: run.state,
      total: run.total ?? 0,
      completed: run.completed,
      failed: run.failed,
      rejected: run.rejected,
      canceled: run.canceled,
      outputDir,
      dashboardUrl: admin && token ? `${admin.url}/ui/runs/${encodeURIComponent(runId)}?${TOKEN_PARAM}=${encodeURIComponent(token)}` : null,
      adminUrl: admin?.url ?? null,
    };
    await opts.keepAlive?.(pb, result);
    return result;
  } finally {
    interruption.dispose();
    await stop();
  }
}
