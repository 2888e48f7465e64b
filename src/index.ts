// The library: one entry point that the CLI, the demo, chaos, the benchmarks and the tests all use
// (createPortraitBatch, in createPortraitBatch.ts), and what its callers are handed or may call
// besides: the roles, the scheduler, the dry run, the completion notice's check.
import type { Config } from './core/config.ts';
import type { PolicyOverrides } from './core/policy.ts';
import type { CancelResult } from './control/cancel.ts';
import type { DownloadResult } from './control/outputs.ts';
import type { RetryResult } from './control/retry.ts';
import type { ManifestSource } from './manifest/source.ts';
import type { StartedRun, StartRunOptions } from './producer/produce.ts';
import type { RunListEntry, RunStatus } from './status.ts';
import type { RunningWebhook } from './webhook/server.ts';
import type { RunningWorkers } from './worker/index.ts';
import type { AdminOptions, PortraitBatch, RunningAdmin } from './portraitBatch.ts';

export type { AdminOptions, PortraitBatch, RunningAdmin };
export type { CancelResult, Config, DownloadResult, ManifestSource, PolicyOverrides, RetryResult, RunListEntry, RunningWebhook, RunningWorkers, RunStatus, StartedRun, StartRunOptions };
export { createPortraitBatch, type PortraitBatchOptions } from './createPortraitBatch.ts';
export { ConfigError, loadConfig } from './core/config.ts';
export { ManifestError } from './manifest/index.ts';
export { manifestSource } from './manifest/source.ts';
export { RunControlError } from './control/errors.ts';
export { dryRun, type DryRun } from './producer/inspect.ts';
/** For receivers of completion notices (NOTIFY_URL): checks X-Portrait-Batch-Signature and refuses stale ones. */
export { NOTICE_TOLERANCE_SECONDS, signNotice, verifyNotice, type NoticeVerdict } from './outputs/notify.ts';

// The long-running roles, each one call: variable checks, reachability, admin listener, signals.
export { runScheduler, runWebhook, runWorker, type RoleOptions } from './roles.ts';
// Triggers: the scheduler role (cron schedules, drop folder) and its schedules file.
export { startScheduler, type RunningScheduler, type SchedulerOptions } from './triggers/scheduler.ts';
export { loadSchedulesFile, type Schedule } from './triggers/schedulesFile.ts';
export { listSchedules } from './triggers/cron.ts';
