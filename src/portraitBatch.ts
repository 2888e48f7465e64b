// The library's handle, as its callers are given it: createPortraitBatch (index.ts) makes one, and the
// scheduler, the drop folder and the admin listener are handed one. Its own file, so that what is
// handed a handle never imports the entry point that starts it.
import type { Server } from 'node:http';
import type { Readable } from 'node:stream';
import type { Config } from './core/config.ts';
import type { Context } from './core/context.ts';
import type { ErrorCategory } from './core/falErrors.ts';
import type { CancelResult } from './control/cancel.ts';
import type { DownloadResult } from './control/outputs.ts';
import type { RetryResult } from './control/retry.ts';
import type { ManifestSource } from './manifest/source.ts';
import type { StartedRun, StartRunOptions } from './producer/produce.ts';
import type { RunListEntry, RunStatus } from './status.ts';
import type { RunningWebhook } from './webhook/server.ts';
import type { RunningWorkers } from './worker/index.ts';

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

export interface AdminOptions {
  port?: number;
  host?: string;
  /** The process role, shown by /healthz. */
  role?: string;
  /** Overrides DASHBOARD_TOKEN (the embedded stack passes the one it keeps in its data dir). */
  dashboardToken?: string;
}

export interface RunningAdmin {
  server: Server;
  port: number;
  host: string;
  /** http://host:port */
  url: string;
  /** Whether /ui is served. */
  dashboard: boolean;
  /** /healthz answers 503 from now on: the process is shutting down. */
  draining(): void;
  close(): Promise<void>;
}
