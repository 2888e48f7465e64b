// The reconciler: a BullMQ job scheduler runs reconcileStaleRequests every RECONCILE_INTERVAL_MS.
// It walks the rows in flight of every active run (bounded by the run window) and moves each one
// that waits for something that is not coming: a webhook that never arrived (poll fal), a poll job
// that died (poll mode: schedule another), a request fal lost (resubmit as a new attempt), a
// submission whose outcome is unknown, a result whose store job died, a terminal row whose metadata
// was not written, a request past its deadline; and it returns places on fal that rows left without
// giving them back.
import type { Context } from '../core/context.ts';
import { DependencyError, isRedisOutage } from '../core/dependencies.ts';
import { FalNotFoundError, FalTransientError, errorMessage } from '../core/errors.ts';
import { classifyFalError } from '../core/fal.ts';
import { falSlots } from '../core/falSlots.ts';
import { TERMINAL } from '../core/keys.ts';
import { resumeUnheldQueues } from '../core/outagePauses.ts';
import { getPause } from '../core/pause.ts';
import { addSubmitJob, enqueueProduce, jobIds } from '../core/queues.ts';
import { addResultJob } from '../core/resultJobs.ts';
import type { ErrorKind, Row } from '../core/rowState.ts';
import type { RunPolicy } from '../core/runPolicy.ts';
import { falKnowsRequest, resubmitForgotten } from './falForgot.ts';
import { flushRow } from './flush.ts';
import { failExpired, lookAtRequest, schedulePoll } from './poll.ts';
import { errorText } from './store.ts';
import { cancelRequest } from './submit.ts';

export interface SweepCounts {
  rows: number;
  polled: number;
  resubmitted: number;
  timedOut: number;
  flushed: number;
  redriven: number;
}

export async function reconcileStaleRequests(ctx: Context, now = Date.now()): Promise<SweepCounts> {
  const counts: SweepCounts = { rows: 0, polled: 0, resubmitted: 0, timedOut: 0, flushed: 0, redriven: 0 };
  const step = ctx.policy.reconcile.sweepConcurrency;
  // Places taken by a submit job that died before it claimed its row are old enough after a job lock.
  await falSlots(ctx).reclaim(async (runId, key) => (await ctx.rows.getRow(runId, key))?.state, ctx.policy.jobs.lockMs, now);
  // A queue an outage paused, whose prober died before it was over, resumes once the record has expired.
  const resumed = await resumeUnheldQueues(ctx);
  if (resumed.length) ctx.logger.info({ queues: resumed }, 'resumed queues no outage holds any more');
  for (const runId of await ctx.rows.activeRunIds()) {
    const run = await ctx.rows.getRun(runId);
    if (!run) continue;
    if (!run.producerDone && !run.options.inline) await ensureProduceJob(ctx, runId);
    const rowKeys = await ctx.rows.activeRowKeys(runId);
    for (let i = 0; i < rowKeys.length; i += step) {
      await Promise.all(
        rowKeys.slice(i, i + step).map(async (key) => {
          try {
            const row = await ctx.rows.getRow(runId, key);
            if (!row) return;
            counts.rows++;
            if (run.state === 'canceled') await cancelRow(ctx, run.policy.endpoint, row, now, counts);
            else await reconcileRow(ctx, run.policy, row, now, counts);
          } catch (err) {
            // An outage is said once by the tracker; anything else at most once a minute per message.
            if (err instanceof DependencyError) ctx.dependencies.down(err.dependency, err.cause);
            else if (isRedisOutage(err)) ctx.dependencies.down('redis', err);
            else ctx.dependencies.error('reconciling a row failed; next sweep tries again', err, { runId, row: key });
          }
        }),
      );
    }
  }
  return counts;
}

/** The process that ended a row flushes it right away; step in only when it evidently died. */
async function flushIfOrphaned(ctx: Context, row: Row, now: number, counts: SweepCounts): Promise<boolean> {
  if (!(TERMINAL as readonly string[]).includes(row.state)) return false;
  if (now - (row.finishedAt ?? 0) > ctx.policy.reconcile.flushAfterMs && !ctx.dependencies.isDown('s3')) {
    await flushRow(ctx, row.runId, row.key);
    counts.flushed++;
  }
  return true;
}

async function reconcileRow(ctx: Context, policy: RunPolicy, row: Row, now: number, counts: SweepCounts): Promise<void> {
  const { reconcile } = ctx.policy;
  if (await flushIfOrphaned(ctx, row, now, counts)) return;
  const deadline = requestDeadline(policy, row);
  if (deadline && now > deadline.at) {
    if (await ctx.rows.finishRow(row.runId, row.key, 'failed', deadline.reason, ['submitted'], row.requestId, { type: 'deadline', category: 'timeout' })) {
      counts.timedOut++;
      if (row.requestId) await cancelRequest(ctx, policy.endpoint, row.requestId);
      await falSlots(ctx).release(row.runId, row.key);
      await flushRow(ctx, row.runId, row.key);
    }
    return;
  }
  switch (row.state) {
    case 'pending':
      // Waiting for its submit job (retry backoff, pause): make sure that job exists.
      if (!(await getPause(ctx))) await ensureSubmitJob(ctx, row, counts);
      return;
    case 'submitting':
      if (now - (row.claimedAt ?? now) > reconcile.graceMs && !(await submitCallInFlight(ctx, row))) {
        await resubmit(ctx, row, 'submitting', undefined, 'the submission got no answer and no webhook came', counts);
      }
      return;
    case 'submitted':
      if (!row.requestId || now < (row.nextPollAt ?? 0)) return;
      if (ctx.cfg.delivery.mode === 'poll') {
        // Its poll job found fal had lost it (404) and handed it over: a new attempt.
        if (row.falStatus === 'LOST') return resubmit(ctx, row, 'submitted', row.requestId, `fal lost request ${row.requestId} (404)`, counts, undefined, true);
        // Its poll job found the result expired, and RESUBMIT_EXPIRED=true: a new attempt, by choice.
        if (row.falStatus === 'EXPIRED') {
          return resubmit(ctx, row, 'submitted', row.requestId, `result expired: fal no longer keeps the result of ${row.requestId}; resubmitted (RESUBMIT_EXPIRED=true)`, counts, {
            type: 'result_expired',
            category: 'storage',
          });
        }
        // Its poll job is overdue (its worker died): another one takes over at once.
        counts.polled++;
        await schedulePoll(ctx, { runId: row.runId, key: row.key, requestId: row.requestId }, row.polls, 0);
        await ctx.rows.markPolled(row.runId, row.key, row.requestId, now + pollBackoff(ctx, row.polls), row.falStatus ?? 'IN_QUEUE', now);
      } else {
        await pollRequest(ctx, policy.endpoint, row, row.requestId, now, counts);
      }
      return;
    case 'storing': {
      const deadline = storeDeadline(policy, row);
      if (deadline !== undefined && now > deadline) return failUnstored(ctx, row, deadline, counts);
      if (row.storeRequestId && now - (row.storingSince ?? now) > reconcile.redriveStoreAfterMs) {
        await redriveStore(ctx, policy.endpoint, row, row.storeRequestId, counts);
      }
      return;
    }
  }
}

/**
 * A row whose result fal finished waits for our storage (S3, and fal for the result itself) as long as
 * the run's ROW_DEADLINE_MS from the result's arrival; only then it fails.
 */
export function storeDeadline(policy: Pick<RunPolicy, 'deadlineMs'>, row: Row): number | undefined {
  return row.state === 'storing' && row.storingSince ? row.storingSince + policy.deadlineMs : undefined;
}

async function failUnstored(ctx: Context, row: Row, deadline: number, counts: SweepCounts): Promise<void> {
  const reason = `stored result could not be written to S3 by ${new Date(deadline).toISOString()} (ROW_DEADLINE_MS after fal finished it)`;
  if (!(await ctx.rows.finishRow(row.runId, row.key, 'failed', reason, ['storing'], row.storeRequestId))) return;
  counts.timedOut++;
  ctx.logger.warn({ runId: row.runId, row: row.key, requestId: row.storeRequestId }, reason);
  // Its metadata is written now if S3 is back, else by a later sweep (flushIfOrphaned).
  if (!ctx.dependencies.isDown('s3')) await flushRow(ctx, row.runId, row.key);
}

/**
 * A row of a canceled run: pending rows end canceled; a submitted request is canceled at fal and its
 * row ends canceled (a result that still comes is ignored); a submission whose answer never came is
 * given the grace period for its webhook to name the request, then ends canceled. Rows storing a
 * result finish storing: fal has done that work.
 */
export async function cancelRow(ctx: Context, endpoint: string, row: Row, now: number, counts: SweepCounts): Promise<void> {
  if (await flushIfOrphaned(ctx, row, now, counts)) return;
  const reason = 'run canceled';
  let ended = false;
  if (row.state === 'pending') ended = await ctx.rows.finishRow(row.runId, row.key, 'canceled', reason, ['pending']);
  else if (row.state === 'submitted' && row.requestId) {
    await cancelRequest(ctx, endpoint, row.requestId);
    ended = await ctx.rows.finishRow(row.runId, row.key, 'canceled', reason, ['submitted'], row.requestId);
    if (ended) await falSlots(ctx).release(row.runId, row.key);
  } else if (row.state === 'submitting' && now - (row.claimedAt ?? now) > ctx.policy.reconcile.graceMs) {
    ended = await ctx.rows.finishRow(row.runId, row.key, 'canceled', `${reason}; its submission got no answer and no webhook came`, ['submitting']);
  } else if (row.state === 'storing' && row.storeRequestId && now - (row.storingSince ?? now) > ctx.policy.reconcile.redriveStoreAfterMs) {
    await redriveStore(ctx, endpoint, row, row.storeRequestId, counts);
  }
  if (ended) await flushRow(ctx, row.runId, row.key);
}

/** Right after a run is canceled: end what can be ended now (the reconciler finishes the rest). */
export async function sweepCanceledRun(ctx: Context, runId: string, now = Date.now()): Promise<SweepCounts> {
  const counts: SweepCounts = { rows: 0, polled: 0, resubmitted: 0, timedOut: 0, flushed: 0, redriven: 0 };
  const run = await ctx.rows.getRun(runId);
  if (!run || run.state !== 'canceled') return counts;
  for (const key of await ctx.rows.activeRowKeys(runId)) {
    const row = await ctx.rows.getRow(runId, key);
    if (!row) continue;
    counts.rows++;
    await cancelRow(ctx, run.policy.endpoint, row, now, counts);
  }
  return counts;
}

/**
 * The deadline of a request on fal's side: the run's ROW_DEADLINE_MS from when a poll first saw it
 * running, or its QUEUE_DEADLINE_MS from its submission while it was never seen running. Rows waiting on
 * our side (pending: for a place on fal, or a retry) have none: waiting here costs nothing. fal enforces
 * QUEUE_DEADLINE_MS too (it is the request's start timeout, answered with a 504): whichever comes first
 * fails the row, and neither resubmits it.
 */
export function requestDeadline(policy: Pick<RunPolicy, 'deadlineMs' | 'queueDeadlineMs'>, row: Row): { at: number; reason: string } | undefined {
  if (row.state !== 'submitted' || !row.submittedAt) return undefined;
  if (row.startedAt !== undefined) {
    return { at: row.startedAt + policy.deadlineMs, reason: `timed out: fal did not finish it within the row deadline (${policy.deadlineMs} ms) of starting it` };
  }
  return { at: row.submittedAt + policy.queueDeadlineMs, reason: `timed out: fal did not start it within the queue deadline (${policy.queueDeadlineMs} ms) of its submission` };
}

/** No webhook within the grace period: ask fal. */
async function pollRequest(ctx: Context, endpoint: string, row: Row, requestId: string, now: number, counts: SweepCounts): Promise<void> {
  counts.polled++;
  const seen = await lookAtRequest(ctx, endpoint, row, requestId, now);
  if (seen.status === 'done') return;
  if (seen.status === 'LOST') return resubmit(ctx, row, 'submitted', requestId, `fal lost request ${requestId} (404)`, counts, undefined, true);
  if (seen.status === 'EXPIRED') {
    // Only by choice (RESUBMIT_EXPIRED=true): fal ran and billed it once already.
    if (!ctx.cfg.RESUBMIT_EXPIRED) return failExpired(ctx, row, requestId);
    return resubmit(ctx, row, 'submitted', requestId, `result expired: fal no longer keeps the result of ${requestId}; resubmitted (RESUBMIT_EXPIRED=true)`, counts, {
      type: 'result_expired',
      category: 'storage',
    });
  }
  await ctx.rows.markPolled(row.runId, row.key, requestId, now + pollBackoff(ctx, row.polls), seen.status, now);
}

function pollBackoff(ctx: Context, polls: number): number {
  const { intervalMs, maxPollIntervalMs } = ctx.policy.reconcile;
  return Math.min(maxPollIntervalMs, intervalMs * 2 ** Math.min(polls, 10));
}



async function resubmit(
  ctx: Context,
  row: Row,
  from: 'submitting' | 'submitted',
  requestId: string | undefined,
  reason: string,
  counts: SweepCounts,
  kind?: ErrorKind,
  /** fal answered 404 for the request: it no longer knows it (counted apart, see falForgot.ts). */
  forgotten = false,
): Promise<void> {
  const outcome = await ctx.rows.supersede(row.runId, row.key, from, row.attempt, requestId, reason, kind, forgotten);
  if (outcome !== 'noop') await falSlots(ctx).release(row.runId, row.key);
  if (outcome === 'failed') await flushRow(ctx, row.runId, row.key);
  if (outcome === 'resubmit') {
    counts.resubmitted++;
    ctx.logger.info({ runId: row.runId, row: row.key, attempt: row.attempt, reason }, 'resubmitting as a new attempt');
    await addSubmitJob(ctx, row, row.attempt);
  }
}

/**
 * Whether the submit job that claimed the row's attempt is still running: its call to fal may yet be
 * answered (a slow fal, a loaded worker), and a new attempt now could be paid beside it. The claiming
 * job is the one of the attempt before (a resubmission adds the job of the superseded attempt) or of
 * this attempt (a re-drive of a pending row); a job whose worker died stops being active once its
 * lock runs out (JOB_LOCK_MS), and its row is then taken up here.
 */
async function submitCallInFlight(ctx: Context, row: Row): Promise<boolean> {
  for (const generation of new Set([Math.max(0, row.attempt - 1), row.attempt])) {
    const job = await ctx.queues.submit.getJob(jobIds.submit(row.runId, row.key, generation));
    if (job && (await job.getState()) === 'active') return true;
  }
  return false;
}

async function ensureSubmitJob(ctx: Context, row: Row, counts: SweepCounts): Promise<void> {
  const id = jobIds.submit(row.runId, row.key, row.attempt);
  const job = await ctx.queues.submit.getJob(id);
  const state = job ? await job.getState() : 'missing';
  if (state === 'failed' || state === 'completed') await job!.remove();
  if (state === 'failed' || state === 'completed' || state === 'missing') {
    // Only rows that have sat pending for a while: a fresh release is still being retried by its job.
    counts.redriven++;
    await addSubmitJob(ctx, row, row.attempt);
  }
}

/** A run whose producer job is gone (its starter died after recording it, or the job failed for good). */
async function ensureProduceJob(ctx: Context, runId: string): Promise<void> {
  const job = await ctx.queues.produce.getJob(jobIds.produce(runId));
  const state = job ? await job.getState() : 'missing';
  if (state === 'failed' || state === 'completed') await job!.remove();
  if (state === 'failed' || state === 'completed' || state === 'missing') await enqueueProduce(ctx, runId);
}


/** A row stuck in storing: its result job died. Fetch the result again and store it. */
async function redriveStore(ctx: Context, endpoint: string, row: Row, requestId: string, counts: SweepCounts): Promise<void> {
  const job = await ctx.queues.results.getJob(jobIds.result(requestId, 'OK'));
  const state = job ? await job.getState() : 'missing';
  // A job waiting out an outage is alive: waiting in its paused queue, or delayed until its next look.
  if (state === 'active' || state === 'waiting' || state === 'delayed' || state === 'prioritized') return;
  counts.redriven++;
  if (job && state === 'failed') {
    await job.retry();
    return;
  }
  if (job) await job.remove();
  try {
    const result = await ctx.fal.queue.result(endpoint, { requestId });
    const hint = { runId: row.runId, key: row.key, attempt: row.requestIds.indexOf(requestId) + 1 || row.attempt };
    await addResultJob(ctx, row.runId, { requestId, status: 'OK', payload: result.data, hint, source: 'poll', receivedAt: Date.now() });
  } catch (raw) {
    const err = classifyFalError(raw);
    if (err instanceof FalTransientError || err.name === 'FalAmbiguousError') return; // next sweep
    const expired = err instanceof FalNotFoundError;
    // A 404 from a fal that no longer knows the request at all (it restarted): a new attempt, not a failure.
    if (expired) {
      const known = await falKnowsRequest(ctx, endpoint, requestId).catch(() => undefined);
      if (known === undefined) return; // fal did not say: next sweep
      if (!known) {
        if ((await resubmitForgotten(ctx, row, requestId, 'its result is gone and its store job died')) !== 'noop') counts.resubmitted++;
        return;
      }
    }
    const reason = expired
      ? `result expired: fal no longer keeps the result of ${requestId} (404) and its store job died`
      : `the result of ${requestId} could not be fetched again: ${errorText({ error: errorMessage(err) })}`;
    const kind: ErrorKind = expired ? { type: 'result_expired', category: 'storage' } : { type: 'store_failed', category: 'storage' };
    if (await ctx.rows.finishRow(row.runId, row.key, 'failed', reason, ['storing'], requestId, kind)) await flushRow(ctx, row.runId, row.key);
  }
}
