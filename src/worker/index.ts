// Starts the worker role: submit, result (store) and control (reconcile, finalize) workers, and the
// job scheduler that runs the reconciler.
import { Worker } from 'bullmq';
import type { Context } from '../core/context.ts';
import { resumeIfKeyChanged } from '../core/pause.ts';
import { QUEUE_NAMES, type FinalizeJob, type ResultJob, type SubmitJob } from '../core/queues.ts';
import { writeRunReport } from './finalize.ts';
import { reconcileStaleRequests } from './reconcile.ts';
import { processResult } from './store.ts';
import { processSubmit, submitBackoff } from './submit.ts';

export interface RunningWorkers {
  workers: Worker[];
  close(): Promise<void>;
}

export async function startWorkers(ctx: Context): Promise<RunningWorkers> {
  const { cfg } = ctx;
  await resumeIfKeyChanged(ctx);
  const common = {
    connection: ctx.redis,
    lockDuration: cfg.JOB_LOCK_MS,
    stalledInterval: Math.max(1000, Math.floor(cfg.JOB_LOCK_MS / 2)),
    // A job whose worker was killed is retried, however often that happens; the row state machine
    // makes every re-run safe, so BullMQ need not give up on it.
    maxStalledCount: 1000,
  };
  const submit = new Worker<SubmitJob>(QUEUE_NAMES.submit, (job, token) => processSubmit(ctx, job, token), {
    ...common,
    concurrency: cfg.SUBMIT_CONCURRENCY,
    limiter: { max: cfg.SUBMIT_RATE_PER_SECOND, duration: 1000 },
    settings: { backoffStrategy: submitBackoff(1000, 60_000) },
  });
  const results = new Worker<ResultJob>(QUEUE_NAMES.results, (job) => processResult(ctx, job), { ...common, concurrency: cfg.STORE_CONCURRENCY });
  const control = new Worker<FinalizeJob | Record<string, never>>(
    QUEUE_NAMES.control,
    async (job) => (job.name === 'finalize' ? writeRunReport(ctx, (job.data as FinalizeJob).runId) : reconcileStaleRequests(ctx)),
    { ...common, concurrency: 2 },
  );
  const workers = [submit, results, control];
  for (const w of workers) {
    w.on('failed', (job, err) => ctx.logger.warn({ queue: w.name, job: job?.id, attempts: job?.attemptsMade, err: err.message }, 'job failed'));
    w.on('error', (err) => ctx.logger.error({ queue: w.name, err: err.message }, 'worker error'));
  }
  await ctx.queues.control.upsertJobScheduler(
    'reconcile',
    { every: cfg.RECONCILE_INTERVAL_MS },
    { name: 'reconcile', data: {}, opts: { removeOnComplete: true, removeOnFail: 100 } },
  );
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  return {
    workers,
    async close() {
      await Promise.all(workers.map((w) => w.close()));
    },
  };
}
