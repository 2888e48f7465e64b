// Starts the worker role: produce (manifest → rows), submit, result (store), poll (poll mode) and
// control (reconcile, finalize) workers, and the job scheduler that runs the reconciler. Retry timing
// comes from ctx.policy.
import { DelayedError, Worker } from 'bullmq';
import { requireRoleVars } from '../core/config.ts';
import { withLogBindings, type Context } from '../core/context.ts';
import { FalTransientError } from '../core/errors.ts';
import { resumeIfKeyChanged } from '../core/pause.ts';
import { backoffDelay, type Backoff } from '../core/policy.ts';
import { redisRestarts } from '../core/redisRestarts.ts';
import { QUEUE_NAMES, type FinalizeJob, type PollJob, type ProduceJob, type ResultJob, type SubmitJob } from '../core/queues.ts';
import { ProducerInterrupted, produceRows } from '../producer/produce.ts';
import { writeRunReport } from './finalize.ts';
import { processPoll } from './poll.ts';
import { isRedisOutage } from '../core/dependencies.ts';
import { brakeOnErrors, isOutageFailure } from './errorBrake.ts';
import { reconcileStaleRequests, sweepCanceledRun } from './reconcile.ts';
import { processResult } from './store.ts';
import { processSubmit } from './submit.ts';
import { startNotifier } from '../outputs/notify.ts';

export interface RunningWorkers {
  workers: Worker[];
  close(): Promise<void>;
}

/** Producers per worker process: each streams one run's manifest and mostly waits on its window. */
const PRODUCE_CONCURRENCY = 4;

/** BullMQ's custom backoff: our policy's delays, never sooner than fal's Retry-After. */
function backoffStrategy(b: Backoff) {
  return (attemptsMade: number, _type?: string, err?: Error): number => {
    const retryAfter = err instanceof FalTransientError ? (err.retryAfterMs ?? 0) : 0;
    return Math.max(backoffDelay(b, attemptsMade), retryAfter);
  };
}

export async function startWorkers(ctx: Context): Promise<RunningWorkers> {
  const { cfg, policy } = ctx;
  requireRoleVars(cfg, 'worker');
  await resumeIfKeyChanged(ctx);
  redisRestarts(ctx); // watched from the start: a restart must be noticed before the next claim
  // Once at start: how results come back, and a setting that cannot work with real fal.
  if (cfg.delivery.warning) ctx.logger.warn({ resultDelivery: cfg.delivery.mode }, cfg.delivery.warning);
  else ctx.logger.info({ resultDelivery: cfg.delivery.mode }, cfg.delivery.why);
  const common = {
    connection: ctx.redis,
    lockDuration: policy.jobs.lockMs,
    stalledInterval: policy.jobs.stalledIntervalMs,
    // A job whose worker was killed is retried, however often that happens; the row state machine
    // makes every re-run safe, so BullMQ need not give up on it.
    maxStalledCount: 1000,
  };
  const stopping = new AbortController();
  const produce = new Worker<ProduceJob>(
    QUEUE_NAMES.produce,
    async (job, token) => {
      try {
        return await produceRows(ctx, job.data.runId, stopping.signal);
      } catch (err) {
        if (!(err instanceof ProducerInterrupted)) throw err;
        // This worker is closing: hand the run back at once; any worker continues from its cursor.
        await job.moveToDelayed(Date.now(), token);
        throw new DelayedError();
      }
    },
    {
      ...common,
      concurrency: PRODUCE_CONCURRENCY,
      settings: { backoffStrategy: backoffStrategy(policy.produce.backoff) },
    },
  );
  const submit = new Worker<SubmitJob>(QUEUE_NAMES.submit, async (job, token) => {
    const outcome = await processSubmit(withLogBindings(ctx, { runId: job.data.runId, row: job.data.key }), job, token);
    ctx.metrics.countSubmit(outcome, job.data.costMicros);
    return outcome;
  }, {
    ...common,
    concurrency: cfg.SUBMIT_CONCURRENCY,
    limiter: { max: cfg.SUBMIT_RATE_PER_SECOND, duration: 1000 },
    settings: { backoffStrategy: backoffStrategy(policy.submit.backoff) },
  });
  const results = new Worker<ResultJob>(QUEUE_NAMES.results, async (job, token) => {
    const outcome = await processResult(withLogBindings(ctx, { requestId: job.data.requestId, runId: job.data.hint?.runId, row: job.data.hint?.key }), job, token);
    ctx.metrics.stores.inc({ outcome });
    return outcome;
  }, {
    ...common,
    concurrency: cfg.STORE_CONCURRENCY,
    settings: { backoffStrategy: backoffStrategy(policy.results.backoff) },
  });
  const control = new Worker<FinalizeJob | Record<string, never>>(
    QUEUE_NAMES.control,
    async (job) => {
      if (job.name === 'finalize') return writeRunReport(ctx, (job.data as FinalizeJob).runId);
      if (job.name === 'cancel') return sweepCanceledRun(ctx, (job.data as FinalizeJob).runId);
      const swept = await reconcileStaleRequests(ctx);
      ctx.metrics.reconcilePolls.inc(swept.polled);
      ctx.metrics.reconcileResubmits.inc(swept.resubmitted);
      return swept;
    },
    { ...common, concurrency: 2, settings: { backoffStrategy: backoffStrategy(policy.finalize.backoff) } },
  );
  const poll = new Worker<PollJob>(QUEUE_NAMES.poll, (job) => processPoll(ctx, job), { ...common, concurrency: policy.poll.concurrency });
  const workers: Worker[] = [produce, submit, results, control, poll];
  // Completion notices (NOTIFY_URL): sent from here, where runs end.
  if (cfg.NOTIFY_URL) workers.push(startNotifier(ctx));
  for (const w of workers) {
    w.on('failed', (job, err) => {
      if (job && job.attemptsMade < (job.opts.attempts ?? 1)) ctx.metrics.retries.inc({ queue: w.name });
      // A job that failed because Redis, S3 or fal is down: the outage was said once already.
      if (isRedisOutage(err)) ctx.dependencies.down('redis', err);
      if (isOutageFailure(err)) return;
      ctx.logger.warn({ queue: w.name, job: job?.id, attempts: job?.attemptsMade, err: err.message }, 'job failed');
    });
  }
  // Every worker `error` goes through the brake: said once (or rate-limited), never a busy loop.
  const brake = brakeOnErrors(ctx, workers);
  await ctx.queues.control.upsertJobScheduler(
    'reconcile',
    { every: policy.reconcile.intervalMs },
    { name: 'reconcile', data: {}, opts: { removeOnComplete: true, removeOnFail: 100 } },
  );
  await Promise.all(workers.map((w) => w.waitUntilReady()));
  return {
    workers,
    async close() {
      stopping.abort();
      brake.close();
      await Promise.all(workers.map((w) => w.close()));
    },
  };
}
