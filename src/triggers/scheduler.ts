// The scheduler role (`portrait-batch scheduler`, also in `demo --keep-alive`): registers the cron
// schedules, runs their ticks, and polls the drop folder. It starts runs only; workers produce them.
// Any number of schedulers may run: a tick fires once (BullMQ job schedulers) and a dropped upload is
// claimed once (Redis). close() lets a tick or a claim in progress finish, then stops.
import { Queue, Worker } from 'bullmq';
import { isRedisOutage } from '../core/dependencies.ts';
import type { PortraitBatch } from '../portraitBatch.ts';
import { processTick, syncSchedules, TRIGGERS_QUEUE, type TickJob } from './cron.ts';
import { startDropFolder, type RunningDropFolder } from './dropFolder.ts';
import type { Schedule } from './schedulesFile.ts';

export interface SchedulerOptions {
  /** The schedules file's content. Undefined (no SCHEDULES_FILE): registered schedules are left as they are. */
  schedules?: Schedule[];
  /** Poll the drop folder (default true). */
  dropFolder?: boolean;
}

export interface RunningScheduler {
  dropFolder?: RunningDropFolder;
  worker: Worker<TickJob>;
  close(): Promise<void>;
}

/** Ticks of different schedules run side by side in one scheduler process. */
const TICK_CONCURRENCY = 4;

export async function startScheduler(pb: PortraitBatch, opts: SchedulerOptions = {}): Promise<RunningScheduler> {
  const ctx = pb.context;
  const { policy } = ctx;
  const queue = new Queue<TickJob>(TRIGGERS_QUEUE, { connection: ctx.redis });
  if (opts.schedules) await syncSchedules(queue, opts.schedules, ctx);
  const worker = new Worker<TickJob>(TRIGGERS_QUEUE, (job) => processTick(pb, job), {
    connection: ctx.redis,
    concurrency: TICK_CONCURRENCY,
    lockDuration: policy.jobs.lockMs,
    stalledInterval: policy.jobs.stalledIntervalMs,
    maxStalledCount: 1000,
  });
  worker.on('failed', (job, err) => {
    // A tick that failed because Redis is down: the outage is said once by the tracker.
    if (isRedisOutage(err)) return ctx.dependencies.down('redis', err);
    ctx.logger.warn({ schedule: job?.data.schedule.name, attempts: job?.attemptsMade, err: err.message }, 'tick failed');
  });
  // Connection errors come once per reconnect: through the tracker (one line per outage, others rate-limited).
  worker.on('error', (err) => (isRedisOutage(err, true) ? ctx.dependencies.down('redis', err) : ctx.dependencies.error('scheduler worker error', err)));
  queue.on('error', (err) => (isRedisOutage(err, true) ? ctx.dependencies.down('redis', err) : ctx.dependencies.error('scheduler queue error', err)));
  await worker.waitUntilReady();
  const dropFolder =
    opts.dropFolder === false
      ? undefined
      : startDropFolder(pb, { prefix: ctx.cfg.DROP_PREFIX, pollMs: policy.drop.pollMs, settleMs: policy.drop.settleMs, claimMs: policy.drop.claimMs });
  ctx.logger.info({ schedules: opts.schedules?.length ?? 'unchanged', dropFolder: dropFolder ? ctx.cfg.DROP_PREFIX : false }, 'scheduler running');
  return {
    dropFolder,
    worker,
    async close() {
      await dropFolder?.close();
      await worker.close();
      await queue.close();
    },
  };
}
