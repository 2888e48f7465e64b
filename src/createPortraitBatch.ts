// createPortraitBatch: the library's one entry point, in a file of its own so that a caller that needs
// only the handle (the CLI's `status`, `runs`, `cancel`…) loads it without everything index.ts exports
// (the scheduler, the roles, the completion notice, the manifest reader). Like graphile-worker's
// run/makeWorkerUtils split, the same handle serves two kinds of caller: those that steer runs
// (startRun, status, listRuns, cancelRun, retryFailed, report — only Redis and S3) and those that are
// the service (startWorkers, startWebhook). Nothing connects until it is used, and close() stops
// whatever this handle started.
import type { DestinationStream } from 'pino';
import { loadConfig, type Config } from './core/config.ts';
import { createContext, type Context } from './core/context.ts';
import { resumeSubmissions } from './core/pause.ts';
import type { PolicyOverrides } from './core/policy.ts';
import { createMetrics } from './ops/metrics.ts';
import type { PortraitBatch } from './portraitBatch.ts';
import { finishedSummary, listEntryOf, runListEntry, runStatus } from './status.ts';

export interface PortraitBatchOptions {
  /** Logger name (the process role). */
  name?: string;
  /** Shorter or longer retry and timing policy than the config gives (tests use it instead of sleeping). */
  policy?: PolicyOverrides;
  /** Where log lines go instead of stderr (tests count them). */
  log?: DestinationStream;
}

export function createPortraitBatch(config: Config | NodeJS.ProcessEnv = process.env, options: PortraitBatchOptions = {}): PortraitBatch {
  const cfg = 'webhookUrl' in config ? (config as Config) : loadConfig(config as NodeJS.ProcessEnv);
  let ctx: Context | undefined;
  const context = () => (ctx ??= createContext(cfg, options.name ?? 'portrait-batch', options.policy, { log: options.log, metrics: () => createMetrics(cfg.CURRENCY) }));
  const started: { close(): Promise<void> }[] = [];

  const handle: PortraitBatch = {
    config: cfg,
    get context() {
      return context();
    },
    // What only some callers use is imported when first called: `status` loads no worker or listener.
    startRun: async (source, opts) => (await import('./producer/produce.ts')).startRun(context(), source, opts),
    status: (runId) => runStatus(context(), runId),
    async listRuns() {
      const c = context();
      // A finished run whose keys expired (RUN_RETENTION) is listed from its summary.json.
      const runs = await Promise.all(
        (await c.rows.runIds()).map(async (id) => {
          const run = await c.rows.getRun(id);
          if (run) return runListEntry(run);
          const summary = await finishedSummary(c, id);
          return summary ? listEntryOf(summary) : undefined;
        }),
      );
      return runs.filter((r) => r !== undefined);
    },
    cancelRun: async (runId) => (await import('./control/cancel.ts')).cancelRun(context(), runId),
    retryFailed: async (runId, opts) => (await import('./control/retry.ts')).retryFailed(context(), runId, opts),
    report: async (runId) => (await import('./control/outputs.ts')).reportOf(context(), runId),
    download: async (runId, dir) => (await import('./control/outputs.ts')).downloadRun(context(), runId, dir),
    async waitForRun(runId, opts = {}) {
      const c = context();
      const { waitForRun } = await import('./producer/wait.ts');
      await waitForRun(c, runId, {
        timeoutMs: opts.timeoutMs,
        onProgress: opts.onProgress ? async () => opts.onProgress!((await runStatus(c, runId))!) : undefined,
      });
      return (await runStatus(c, runId))!;
    },
    resume: () => resumeSubmissions(context()),
    async startWorkers() {
      const { startWorkers } = await import('./worker/index.ts');
      const w = await startWorkers(context());
      started.push(w);
      return w;
    },
    async startWebhook(opts = {}) {
      const { startWebhookServer } = await import('./webhook/server.ts');
      const hook = await startWebhookServer(context(), opts.port ?? cfg.WEBHOOK_PORT, opts.host);
      started.push(hook);
      return hook;
    },
    async startAdmin(opts = {}) {
      const { startAdminServer } = await import('./ops/adminServer.ts');
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
