// Cron schedules as BullMQ job schedulers (upsertJobScheduler): BullMQ makes one job per tick whatever
// the number of scheduler processes, and any of them runs it. A tick starts a run of the schedule's
// manifest named after the schedule and the tick, so a tick run twice (a retried job) resumes the same
// run; a tick whose previous run of the schedule is still running is skipped (fireTick.lua).
import { Queue, type Job } from 'bullmq';
import type { Context } from '../core/context.ts';
import { keys } from '../core/keys.ts';
import { parseS3Url } from '../core/s3.ts';
import type { PortraitBatch } from '../portraitBatch.ts';
import { ManifestError } from '../manifest/index.ts';
import { triggerCommand } from './commands.ts';
import { triggerKeys, TICKS_KEPT } from './keys.ts';
import { nextFire, type Schedule } from './schedulesFile.ts';

export const TRIGGERS_QUEUE = 'pb-triggers';
const SCHEDULER_PREFIX = 'schedule~';
const MANIFEST = /\.csv(\.gz)?$/i;

export interface TickJob {
  schedule: Schedule;
}

export const schedulerId = (name: string) => `${SCHEDULER_PREFIX}${name}`;

/** The run a tick starts: `<schedule>-<tick in UTC, to the second>`. */
export function tickRunId(name: string, tick: number): string {
  const iso = new Date(tick).toISOString();
  const ms = iso.slice(20, 23);
  return `${name}-${iso.slice(0, 19).replace(/[-:]/g, '')}${ms === '000' ? '' : `.${ms}`}Z`;
}

/** Registers every schedule (replacing changed ones) and removes the schedulers of schedules no longer in the list. */
export async function syncSchedules(queue: Queue<TickJob>, schedules: Schedule[], ctx: Context): Promise<void> {
  for (const s of schedules) {
    await queue.upsertJobScheduler(
      schedulerId(s.name),
      { pattern: s.cron, tz: s.timezone },
      { name: 'tick', data: { schedule: s }, opts: { attempts: 5, backoff: { type: 'exponential', delay: 1000 }, removeOnComplete: 100, removeOnFail: 100 } },
    );
  }
  const wanted = new Set(schedules.map((s) => schedulerId(s.name)));
  for (const registered of await queue.getJobSchedulers(0, -1)) {
    if (registered.key.startsWith(SCHEDULER_PREFIX) && !wanted.has(registered.key)) {
      await queue.removeJobScheduler(registered.key);
      ctx.logger.info({ schedule: registered.key.slice(SCHEDULER_PREFIX.length) }, 'schedule removed: it is no longer in the schedules file');
    }
  }
  ctx.logger.info({ schedules: schedules.map((s) => s.name) }, 'schedules registered');
}

export type TickOutcome = { outcome: 'fired'; runId: string } | { outcome: 'skipped'; running: string } | { outcome: 'failed'; reason: string };

/** The tick job: fire the schedule's run unless its previous run is still running (`now`: tests move the clock). */
export async function processTick(pb: PortraitBatch, job: Job<TickJob>, now: () => number = Date.now): Promise<TickOutcome> {
  const ctx = pb.context;
  const { schedule } = job.data;
  const tick = job.opts.prevMillis ?? Number(String(job.id).split(':').pop() ?? job.timestamp);
  const runId = tickRunId(schedule.name, tick);
  const scheduleKey = triggerKeys.schedule(schedule.name);
  const ticksKey = triggerKeys.scheduleTicks(schedule.name);
  const log = ctx.logger.child({ schedule: schedule.name, tick: new Date(tick).toISOString() });

  let reply: 'fire' | 'again' | 'skip' | 'stale' = 'stale';
  let prev = '';
  for (let i = 0; reply === 'stale' && i < 5; i++) {
    prev = (await ctx.redis.hget(scheduleKey, 'runId')) ?? '';
    reply = await triggerCommand(ctx.redis, 'fireTick', [scheduleKey, keys.run(prev || runId), ticksKey], [prev, runId, tick, now(), ctx.policy.jobs.lockMs * 2, TICKS_KEPT]);
  }
  if (reply === 'stale') throw new Error(`schedule ${schedule.name} kept changing while its tick was fired`);
  if (reply === 'skip') {
    log.warn({ running: prev }, 'tick skipped: the previous run of this schedule is still running');
    return { outcome: 'skipped', running: prev };
  }
  try {
    const manifest = await resolveManifest(ctx, schedule.manifest);
    const started = await pb.startRun(manifest, { runId, maxCost: schedule.options.maxCost, extra: { schedule: schedule.name, tick } });
    await ctx.redis.hset(scheduleKey, 'lastRunId', runId);
    log.info({ runId, manifest, rows: started.total, resumed: started.resumed }, 'schedule fired');
    return { outcome: 'fired', runId };
  } catch (err) {
    // A bad or missing manifest will not get better by retrying this tick: the next tick tries again.
    if (!(err instanceof ManifestError)) throw err;
    await triggerCommand(ctx.redis, 'failTick', [scheduleKey, ticksKey], [runId, tick, err.message, now(), TICKS_KEPT]);
    log.error({ runId, reason: err.message }, 'tick failed: its run could not be started');
    return { outcome: 'failed', reason: err.message };
  }
}

/** `s3://bucket/key` as is; for `s3://bucket/prefix/`, its newest .csv/.csv.gz object. */
export async function resolveManifest(ctx: Context, manifest: string): Promise<string> {
  if (!manifest.endsWith('/')) return manifest;
  const { bucket, key: prefix } = parseS3Url(manifest);
  let newest: { key: string; lastModified: number } | undefined;
  try {
    for await (const o of ctx.storage.list(prefix, bucket)) {
      if (!MANIFEST.test(o.key)) continue;
      if (!newest || o.lastModified > newest.lastModified || (o.lastModified === newest.lastModified && o.key > newest.key)) newest = o;
    }
  } catch (err) {
    const name = (err as { name?: string }).name;
    if (name === 'NoSuchBucket' || name === 'AccessDenied') throw new ManifestError(`cannot list ${manifest}: ${name}`);
    throw err;
  }
  if (!newest) throw new ManifestError(`no .csv or .csv.gz manifest under ${manifest}`);
  return `s3://${bucket}/${newest.key}`;
}

export interface ScheduleListing {
  name: string;
  cron: string;
  timezone: string;
  manifest: string;
  options: Schedule['options'];
  /** Whether a BullMQ job scheduler exists for it (a scheduler process has started with it). */
  registered: boolean;
  /** Next fire time, ISO 8601. */
  next: string | null;
  lastRun: { runId: string; state: string; startedAt: string; finishedAt: string | null; completed: number; failed: number; rejected: number; canceled: number } | null;
  /** Ticks skipped because the previous run was still running, and when the last one was. */
  skipped: number;
  lastSkippedAt: string | null;
  lastError: string | null;
}

/** The schedules of the file (or, without one, those registered in Redis) with next fire time and last run. */
export async function listSchedules(ctx: Context, fromFile?: Schedule[]): Promise<ScheduleListing[]> {
  const queue = new Queue<TickJob>(TRIGGERS_QUEUE, { connection: ctx.redis });
  try {
    const registered = new Map((await queue.getJobSchedulers(0, -1)).filter((j) => j.key.startsWith(SCHEDULER_PREFIX)).map((j) => [j.key, j]));
    const schedules = fromFile ?? [...registered.values()].map((j) => j.template?.data?.schedule).filter((s): s is Schedule => Boolean(s));
    return await Promise.all(
      schedules.map(async (s) => {
        const reg = registered.get(schedulerId(s.name));
        const h = await ctx.redis.hgetall(triggerKeys.schedule(s.name));
        const run = h.lastRunId ? await ctx.rows.getRun(h.lastRunId) : undefined;
        const next = reg?.next ?? nextFire(s).getTime();
        return {
          name: s.name,
          cron: s.cron,
          timezone: s.timezone,
          manifest: s.manifest,
          options: s.options,
          registered: Boolean(reg),
          next: Number.isFinite(next) ? new Date(next).toISOString() : null,
          lastRun: run
            ? {
                runId: run.runId,
                state: run.state,
                startedAt: new Date(run.createdAt).toISOString(),
                finishedAt: run.finishedAt ? new Date(run.finishedAt).toISOString() : null,
                completed: run.completed,
                failed: run.failed,
                rejected: run.rejected,
                canceled: run.canceled,
              }
            : null,
          skipped: Number(h.skipped ?? 0),
          lastSkippedAt: h.lastSkippedTick ? new Date(Number(h.lastSkippedTick)).toISOString() : null,
          lastError: h.lastError || null,
        };
      }),
    );
  } finally {
    await queue.close();
  }
}

export function formatSchedules(list: ScheduleListing[]): string {
  if (!list.length) return 'no schedules';
  return list
    .map((s) => {
      const last = s.lastRun ? `last run ${s.lastRun.runId} (${s.lastRun.state})` : 'no run yet';
      const extra = [s.skipped ? `${s.skipped} ticks skipped` : '', s.lastError ? `last error: ${s.lastError}` : '', s.registered ? '' : 'not registered'].filter(Boolean);
      return `${s.name}  ${s.cron} (${s.timezone})  ${s.manifest}  next ${s.next ?? '—'}  ${last}${extra.length ? `  · ${extra.join(' · ')}` : ''}`;
    })
    .join('\n');
}
