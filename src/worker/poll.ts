// Poll mode (RESULT_DELIVERY=poll, or auto without a webhook URL fal can reach): each fal request is
// looked at by its own delayed BullMQ job, scheduled for when the request should be done by what this
// run has seen of fal: the run time of its finished requests (fal's `inference_time`) and the queue
// position of this one. A request done on time costs three calls (submit, status, result) and is
// fetched within about a tenth of its run time (or twice the run times' spread, at most 1 s) of
// finishing; one not done yet is looked at again soon. The reconciler sweep steps in only when a poll job is overdue (its worker died).
// A run that has seen nothing finish yet times the first look at each request by what the runs before
// it learned of the same endpoint (kept in Redis for a week), so a service that has run before pays no
// early look for its first wave either; the first run ever starts cold (1 s, then doubling).
import { outageOf } from '../core/dependencies.ts';
import type { Job } from 'bullmq';
import type { Context } from '../core/context.ts';
import { FalAuthError, FalNotFoundError, FalRejectedError, FalStartTimeoutError, FalTransientError, errorMessage } from '../core/errors.ts';
import type { FalErrorInfo } from '../core/falErrors.ts';
import { falSlots } from '../core/falSlots.ts';
import { classifyFalError } from '../core/fal.ts';
import { keys } from '../core/keys.ts';
import type { Policy } from '../core/policy.ts';
import { jobIds, type PollJob } from '../core/queues.ts';
import { addResultJob } from '../core/resultJobs.ts';
import type { Row } from '../core/rowState.ts';
import { flushRow } from './flush.ts';

const TIMING_TTL_SECONDS = 7 * 86400;

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

/** What a run has seen of fal's timing. */
export interface RunTiming {
  /** Estimated run time of one request (from IN_PROGRESS to COMPLETED), ms. */
  runMs?: number;
  /** How far run times stray from the estimate (mean absolute deviation), ms; once there are two samples. */
  devMs?: number;
  samples: number;
}

const numberOr = (v: string | null | undefined): number | undefined => (v ? Number(v) : undefined);

export async function runTiming(ctx: Pick<Context, 'redis'>, runId: string): Promise<RunTiming> {
  const [runMs, devMs, samples] = await ctx.redis.hmget(keys.timing(runId), 'runMs', 'devMs', 'samples');
  return { runMs: numberOr(runMs), devMs: numberOr(devMs), samples: Number(samples ?? 0) };
}

/** An estimate and its spread moved toward a new sample by `weight` (the spread starts at the first difference). */
function ewma(runMs: number | undefined, devMs: number | undefined, ms: number, weight: number): { runMs: number; devMs?: number } {
  if (runMs === undefined) return { runMs: ms };
  const diff = Math.abs(ms - runMs);
  return { runMs: runMs + weight * (ms - runMs), devMs: devMs === undefined ? diff : devMs + weight * (diff - devMs) };
}

/** Hash fields of an estimate, rounded to ms. */
const fields = (e: { runMs: number; devMs?: number }): Record<string, number> =>
  e.devMs === undefined ? { runMs: Math.round(e.runMs) } : { runMs: Math.round(e.runMs), devMs: Math.round(e.devMs) };

/**
 * The run time the runs before this one learned of `endpoint`, for a run that has learned none of its
 * own: only within the poll gaps' bounds (a wrong or stale one costs one look too early, or one look
 * at most `maxGapMs` late), and only while it is fresh (its key expires).
 */
export async function endpointTiming(ctx: Pick<Context, 'redis' | 'policy'>, endpoint: string): Promise<RunTiming> {
  const { runMs, devMs } = await storedEndpointTiming(ctx, endpoint);
  if (runMs === undefined) return { samples: 0 };
  const { minGapMs, maxGapMs } = ctx.policy.poll;
  return { runMs: clamp(runMs, minGapMs, maxGapMs), devMs: devMs === undefined ? undefined : Math.min(devMs, maxGapMs), samples: 0 };
}

/** The endpoint's estimate as stored (anything but a positive run time and a spread ≥ 0 is ignored). */
async function storedEndpointTiming(ctx: Pick<Context, 'redis'>, endpoint: string): Promise<{ runMs?: number; devMs?: number }> {
  const [runMs, devMs] = (await ctx.redis.hmget(keys.endpointTiming(endpoint), 'runMs', 'devMs')).map((v) => (v === null ? NaN : Number(v)));
  if (!(runMs! > 0 && Number.isFinite(runMs))) return {};
  return { runMs, devMs: devMs! >= 0 && Number.isFinite(devMs) ? devMs : undefined };
}

/**
 * Adds a finished request's run time to the run's estimate (a lost race only loses one sample). Given
 * the endpoint (only for fal's own measure of it), also to the endpoint's estimate that the next runs
 * start from; a webhook's arrival (submit to delivery, queueing included) teaches only its run.
 */
export async function observeRunTime(ctx: Pick<Context, 'redis' | 'policy'>, runId: string, ms: number, endpoint?: string): Promise<void> {
  if (!(ms > 0) || !Number.isFinite(ms)) return;
  const { ewmaWeight, endpointTimingTtlSeconds } = ctx.policy.poll;
  const [t, known] = await Promise.all([runTiming(ctx, runId), endpoint ? storedEndpointTiming(ctx, endpoint) : undefined]);
  const run = ewma(t.runMs, t.devMs, ms, Math.max(ewmaWeight, 1 / (t.samples + 1)));
  const tx = ctx.redis.multi().hset(keys.timing(runId), { ...fields(run), samples: t.samples + 1 }).expire(keys.timing(runId), TIMING_TTL_SECONDS);
  if (endpoint) {
    tx.hset(keys.endpointTiming(endpoint), fields(ewma(known?.runMs, known?.devMs, ms, ewmaWeight))).expire(keys.endpointTiming(endpoint), endpointTimingTtlSeconds);
  }
  await tx.exec();
}

/** What the last look (or the submit answer) said about a request. */
export interface RequestView {
  status: 'IN_QUEUE' | 'IN_PROGRESS' | 'UNREACHABLE';
  /** fal's queue_position (0 = next to run). */
  queuePosition?: number;
  sinceSubmitMs: number;
  /** Since a poll first saw it running, when one did before this look. */
  sinceStartMs?: number;
  /** Looks so far that found it unreachable in a row (for their backoff). */
  polls: number;
}

/**
 * When to look at a request next, in ms from now: at its expected end (queue position and the run's
 * run time, spread over `concurrency` places) plus a small margin; soon when it is already overdue;
 * and, before the run has seen any request finish, at 1 s then doubling the time since submit.
 */
export function nextPollDelay(p: Policy['poll'], timing: RunTiming, view: RequestView, concurrency: number): number {
  if (view.status === 'UNREACHABLE') return clamp(p.unreachableBaseMs * 2 ** Math.min(view.polls, 6), p.minGapMs, p.maxGapMs);
  const T = timing.runMs;
  if (T === undefined) return clamp(Math.max(p.coldFirstMs, view.sinceSubmitMs), p.minGapMs, p.maxGapMs);
  // Past the expected end by a tenth of it, or by twice the spread of the run times seen when they vary more.
  const margin = clamp(Math.max(0.1 * T, 2 * (timing.devMs ?? 0)), 100, 1000);
  const waves = Math.floor((view.queuePosition ?? 0) / Math.max(1, concurrency));
  let remaining: number;
  if (view.status === 'IN_QUEUE') remaining = (waves + 1) * T;
  else remaining = T - (view.sinceStartMs ?? Math.max(0, view.sinceSubmitMs - waves * T));
  if (remaining + margin < p.minGapMs) return clamp(0.2 * T, p.minGapMs, p.overdueGapMaxMs);
  return clamp(remaining + margin, p.minGapMs, p.maxGapMs);
}

/** Schedules the next look at a request `delayMs` from now and tells the sweep when it is due. */
export async function schedulePoll(ctx: Context, job: PollJob, polls: number, delayMs: number): Promise<void> {
  await ctx.queues.poll.add('poll', job, {
    jobId: jobIds.poll(job.requestId, polls),
    delay: Math.max(0, Math.round(delayMs)),
    removeOnComplete: true,
    removeOnFail: { age: 86400, count: 1000 },
  });
}

/**
 * After fal accepted a submission in poll mode: the first look, at the request's expected end — by the
 * run's own estimate, or before it has one by the endpoint's from earlier runs. Only this first look
 * uses the earlier runs' estimate: a request it finds unfinished is looked at on the run's own (cold)
 * schedule after, so an estimate that does not fit this run's inputs costs one look, not a series.
 */
export async function firstPollDelay(ctx: Context, runId: string, endpoint: string, queuePosition: number | undefined): Promise<number> {
  let timing = await runTiming(ctx, runId);
  if (timing.runMs === undefined) timing = await endpointTiming(ctx, endpoint);
  return nextPollDelay(ctx.policy.poll, timing, { status: 'IN_QUEUE', queuePosition, sinceSubmitMs: 0, polls: 0 }, ctx.cfg.FAL_CONCURRENCY);
}

/** A poll job: look once; collect a finished request's result, or schedule the next look. */
export async function processPoll(ctx: Context, job: Job<PollJob>): Promise<string> {
  const { runId, key, requestId } = job.data;
  const row = await ctx.rows.getRow(runId, key);
  if (!row || row.state !== 'submitted' || row.requestId !== requestId) return 'moved-on';
  const now = Date.now();
  const endpoint = (await ctx.rows.getRun(runId))?.policy.endpoint || ctx.cfg.FAL_ENDPOINT;
  const seen = await lookAtRequest(ctx, endpoint, row, requestId, now);
  if (seen.status === 'done') return 'done';
  if (seen.status === 'LOST' || (seen.status === 'EXPIRED' && ctx.cfg.RESUBMIT_EXPIRED)) {
    // The sweep resubmits lost requests (as a new attempt, within MAX_ATTEMPTS): hand it over now.
    await ctx.rows.markPolled(runId, key, requestId, now, seen.status, now);
    return seen.status === 'LOST' ? 'lost' : 'expired';
  }
  if (seen.status === 'EXPIRED') {
    await failExpired(ctx, row, requestId);
    return 'expired';
  }
  const timing = await runTiming(ctx, runId);
  const queuePosition = seen.status === 'UNREACHABLE' ? job.data.queuePosition : (seen.queuePosition ?? job.data.queuePosition);
  const unreachableInARow = seen.status === 'UNREACHABLE' ? (row.falStatus === 'UNREACHABLE' ? row.polls : 0) : 0;
  const delay = nextPollDelay(
    ctx.policy.poll,
    timing,
    {
      status: seen.status,
      queuePosition,
      sinceSubmitMs: now - (row.submittedAt ?? now),
      sinceStartMs: row.startedAt === undefined ? undefined : now - row.startedAt,
      polls: unreachableInARow,
    },
    ctx.cfg.FAL_CONCURRENCY,
  );
  await ctx.rows.markPolled(runId, key, requestId, now + delay + ctx.policy.poll.safetyMs, seen.status, now);
  await schedulePoll(ctx, { runId, key, requestId, queuePosition }, row.polls + 1, delay);
  return seen.status;
}

export type Seen =
  | { status: 'done' }
  | { status: 'LOST' }
  /** fal COMPLETED it, and no longer keeps its result (404 on the result call). */
  | { status: 'EXPIRED' }
  | { status: 'IN_QUEUE' | 'IN_PROGRESS'; queuePosition?: number }
  | { status: 'UNREACHABLE' };

/** Why a row whose result fal no longer keeps ends failed (RESUBMIT_EXPIRED=false: never paid twice). */
export const expiredReason = (requestId: string) =>
  `result expired: fal completed request ${requestId} but no longer keeps its result (404); not resubmitted (RESUBMIT_EXPIRED=false)`;

/** A COMPLETED request whose result fal no longer keeps: the row fails (`result expired`), it is not paid for again. */
export async function failExpired(ctx: Context, row: Row, requestId: string): Promise<void> {
  ctx.logger.warn({ runId: row.runId, row: row.key, requestId }, 'fal no longer keeps the result of a completed request; its row fails');
  if (await ctx.rows.finishRow(row.runId, row.key, 'failed', expiredReason(requestId), ['submitted'], requestId, { type: 'result_expired', category: 'storage' })) {
    await falSlots(ctx).release(row.runId, row.key);
    await flushRow(ctx, row.runId, row.key);
  }
}

interface FalStatus {
  status: string;
  queue_position?: number;
  error?: string;
  error_type?: string;
  metrics?: { inference_time?: number | null };
}

/**
 * One look at a request (the poll job's and the reconciler's): a finished one has its result (or
 * fal's full error, from queue.result) queued for the store worker and its run time added to the
 * run's estimate; otherwise what fal said.
 */
export async function lookAtRequest(ctx: Context, endpoint: string, row: Row, requestId: string, now: number): Promise<Seen> {
  let status: FalStatus;
  try {
    status = (await ctx.fal.queue.status(endpoint, { requestId, logs: false })) as FalStatus;
  } catch (raw) {
    const err = classifyFalError(raw);
    if (err instanceof FalNotFoundError) return { status: 'LOST' };
    if (outageOf(err) === 'fal') ctx.dependencies.down('fal', err); // said once; submissions pause until it is back
    if (err instanceof FalTransientError || err instanceof FalAuthError || err.name === 'FalAmbiguousError') return { status: 'UNREACHABLE' };
    // Any other answer to a status call: the request is over for fal; its result call says how.
    status = { status: 'COMPLETED', error: err.message };
  }
  if (status.status !== 'COMPLETED') {
    return { status: status.status === 'IN_PROGRESS' ? 'IN_PROGRESS' : 'IN_QUEUE', queuePosition: status.queue_position };
  }
  const inference = status.metrics?.inference_time;
  const started = row.requestId === requestId ? (row.startedAt ?? row.submittedAt) : undefined;
  const runMs = typeof inference === 'number' ? inference * 1000 : started ? now - started : undefined;
  // Only fal's own measure of the run time speaks for the endpoint (a poll's view includes its lateness).
  if (runMs !== undefined) await observeRunTime(ctx, row.runId, runMs, typeof inference === 'number' ? endpoint : undefined);
  const hint = { runId: row.runId, key: row.key, attempt: row.requestIds.indexOf(requestId) + 1 || row.attempt };
  try {
    const result = await ctx.fal.queue.result(endpoint, { requestId });
    await addResultJob(ctx, row.runId, { requestId, status: 'OK', payload: result.data, hint, source: 'poll', receivedAt: now }, undefined, { replaceFinished: true });
  } catch (raw) {
    const err = classifyFalError(raw);
    // Status said COMPLETED: a 404 now is a result fal no longer keeps, not a lost request.
    if (err instanceof FalNotFoundError) return { status: 'EXPIRED' };
    // fal's own answer about the request (4xx, or a 5xx once status said it failed), not a failed call.
    const answered =
      err instanceof FalRejectedError || err instanceof FalStartTimeoutError || (!!status.error && err instanceof FalTransientError && err.status !== undefined);
    if (!answered && !status.error) return { status: 'UNREACHABLE' };
    // fal's full detail comes from the result call; the status call's error is only a summary.
    const error = answered ? errorMessage(err) : [status.error, status.error_type].filter(Boolean).join(': ');
    const falError: FalErrorInfo | undefined = answered ? (err as { fal?: FalErrorInfo }).fal : status.error_type ? { type: status.error_type } : undefined;
    await addResultJob(ctx, row.runId, { requestId, status: 'ERROR', error, falError, hint, source: 'poll', receivedAt: now }, undefined, { replaceFinished: true });
  }
  return { status: 'done' };
}
