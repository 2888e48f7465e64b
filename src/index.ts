// The library: one entry point that the CLI, the demo, chaos, the benchmarks and the tests all use.
// Like graphile-worker's run/makeWorkerUtils split, the same handle serves two kinds of caller: those
// that steer runs (startRun, status, listRuns, cancelRun, retryFailed, report — only Redis and S3) and
// those that are the service (startWorkers, startWebhook). Nothing connects until it is used, and
// close() stops whatever this handle started.
import type { Readable } from 'node:stream';
import { loadConfig, type Config } from './core/config.ts';
import { createContext, type Context } from './core/context.ts';
import { resumeSubmissions } from './core/pause.ts';
import type { PolicyOverrides } from './core/policy.ts';
import { cancelRun, type CancelResult } from './control/cancel.ts';
import { downloadRun, reportOf, type DownloadResult } from './control/outputs.ts';
import { retryFailed, type RetryResult } from './control/retry.ts';
import type { ErrorCategory } from './core/falErrors.ts';
import { manifestSource, type ManifestSource } from './manifest/source.ts';
import { startAdminServer, type AdminOptions, type RunningAdmin } from './ops/adminServer.ts';
import { dryRunReport, inspectManifest } from './producer/inspect.ts';
import { startRun, type StartedRun, type StartRunOptions } from './producer/produce.ts';
import { waitForRun } from './producer/wait.ts';
import { runListEntry, runStatus, type RunListEntry, type RunStatus } from './status.ts';
import { startWebhookServer, type RunningWebhook } from './webhook/server.ts';
import { startWorkers, type RunningWorkers } from './worker/index.ts';

export type { AdminOptions, RunningAdmin };
export type { CancelResult, Config, DownloadResult, ManifestSource, PolicyOverrides, RetryResult, RunListEntry, RunningWebhook, RunningWorkers, RunStatus, StartedRun, StartRunOptions };
export { ConfigError, loadConfig } from './core/config.ts';
export { ManifestError } from './manifest/index.ts';
export { manifestSource } from './manifest/source.ts';
export { RunControlError } from './control/errors.ts';
/** For receivers of completion notices (NOTIFY_URL): checks X-Portrait-Batch-Signature and refuses stale ones. */
export { NOTICE_TOLERANCE_SECONDS, signNotice, verifyNotice, type NoticeVerdict } from './triggers/notify.ts';

export interface PortraitBatchOptions {
  /** Logger name (the process role). */
  name?: string;
  /** Shorter or longer retry and timing policy than the config gives (tests use it instead of sleeping). */
  policy?: PolicyOverrides;
}

export type DryRun = ReturnType<typeof dryRunReport>;

export interface PortraitBatch {
  readonly config: Config;
  /** The shared connections (Redis, S3, fal, queues), made on first use. */
  readonly context: Context;
  /** Records a run of a manifest (local path, s3://bucket/key, either also .gz) and enqueues its producer. */
  startRun(source: string | ManifestSource, options?: StartRunOptions): Promise<StartedRun>;
  status(runId: string): Promise<RunStatus | undefined>;
  listRuns(): Promise<RunListEntry[]>;
  cancelRun(runId: string): Promise<CancelResult>;
  /** A new run of the failed rows of a finished run, linked to it both ways. */
  /** `only`: the error categories whose failed rows are retried (default: every failed row). */
  retryFailed(runId: string, opts?: { only?: readonly ErrorCategory[] }): Promise<RetryResult>;
  /** The run's report.csv. */
  report(runId: string): Promise<Readable>;
  /** Images, report, summary, manifest and a contact sheet (index.html) into a folder. */
  download(runId: string, dir: string): Promise<DownloadResult>;
  /** Resolves with the run's status once its report is written. */
  waitForRun(runId: string, options?: { timeoutMs?: number; onProgress?: (status: RunStatus) => void }): Promise<RunStatus>;
  /** Lifts the pause that fal refusing the API key put on submissions. */
  resume(): Promise<boolean>;
  startWorkers(): Promise<RunningWorkers>;
  startWebhook(options?: { port?: number; host?: string }): Promise<RunningWebhook>;
  /** The admin listener (ADMIN_HOST:ADMIN_PORT): /metrics, /healthz, /readyz and, with DASHBOARD_TOKEN, the dashboard under /ui. */
  startAdmin(options?: AdminOptions): Promise<RunningAdmin>;
  /** Stops the workers and receivers this handle started, then its connections. */
  close(): Promise<void>;
}

/** Validates and estimates a manifest without Redis, S3 or fal (an S3 manifest needs S3 to be read). */
export async function dryRun(source: string | ManifestSource, config: Config = loadConfig()): Promise<DryRun> {
  const src =
    typeof source === 'string'
      ? manifestSource(source, /^s3:\/\//i.test(source) ? new (await import('./core/s3.ts')).Storage(config) : undefined)
      : source;
  return dryRunReport(await inspectManifest(src), config.PRICE_PER_MEGAPIXEL, config.CURRENCY);
}

export function createPortraitBatch(config: Config | NodeJS.ProcessEnv = process.env, options: PortraitBatchOptions = {}): PortraitBatch {
  const cfg = 'webhookUrl' in config ? (config as Config) : loadConfig(config as NodeJS.ProcessEnv);
  let ctx: Context | undefined;
  const context = () => (ctx ??= createContext(cfg, options.name ?? 'portrait-batch', options.policy));
  const started: { close(): Promise<void> }[] = [];

  const handle: PortraitBatch = {
    config: cfg,
    get context() {
      return context();
    },
    startRun: (source, opts) => startRun(context(), source, opts),
    status: (runId) => runStatus(context(), runId),
    async listRuns() {
      const c = context();
      const runs = await Promise.all((await c.rows.runIds()).map((id) => c.rows.getRun(id)));
      return runs.filter((r) => r !== undefined).map(runListEntry);
    },
    cancelRun: (runId) => cancelRun(context(), runId),
    retryFailed: (runId, opts) => retryFailed(context(), runId, opts),
    report: (runId) => reportOf(context(), runId),
    download: (runId, dir) => downloadRun(context(), runId, dir),
    async waitForRun(runId, opts = {}) {
      const c = context();
      await waitForRun(c, runId, {
        timeoutMs: opts.timeoutMs,
        onProgress: opts.onProgress ? async () => opts.onProgress!((await runStatus(c, runId))!) : undefined,
      });
      return (await runStatus(c, runId))!;
    },
    resume: () => resumeSubmissions(context()),
    async startWorkers() {
      const w = await startWorkers(context());
      started.push(w);
      return w;
    },
    async startWebhook(opts = {}) {
      const hook = await startWebhookServer(context(), opts.port ?? cfg.WEBHOOK_PORT, opts.host);
      started.push(hook);
      return hook;
    },
    async startAdmin(opts = {}) {
      const admin = await startAdminServer(handle, opts);
      started.push(admin);
      return admin;
    },
    async close() {
      for (const s of started.splice(0).reverse()) await s.close();
      await ctx?.close();
      ctx = undefined;
    },
  };
  return handle;
}

// Triggers: the scheduler role (cron schedules, drop folder) and its schedules file.
export { startScheduler, type RunningScheduler, type SchedulerOptions } from './triggers/scheduler.ts';
export { loadSchedulesFile, type Schedule } from './triggers/schedulesFile.ts';
export { listSchedules } from './triggers/cron.ts';
