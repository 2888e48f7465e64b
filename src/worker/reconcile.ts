// The reconciler: a BullMQ job scheduler runs reconcileStaleRequests every RECONCILE_INTERVAL_MS.
// It walks the rows in flight of every active run (bounded by the run window) and moves each one
// that waits for something that is not coming: a webhook that never arrived (poll fal), a request
// fal lost (resubmit as a new attempt), a submission whose outcome is unknown, a result whose store
// job died, a terminal row whose metadata was not written, a row past its deadline.
import type { Context } from '../core/context.ts';
import { FalNotFoundError, FalTransientError, errorMessage } from '../core/errors.ts';
import { classifyFalError } from '../core/fal.ts';
import { TERMINAL } from '../core/keys.ts';
import { getPause } from '../core/pause.ts';
import { jobIds, resultJobOptions, submitJobOptions, type ResultJob } from '../core/queues.ts';
import type { Row } from '../core/rowState.ts';
import { flushRow } from './flush.ts';
import { errorText } from './store.ts';

const SWEEP_CONCURRENCY = 16;
/** Longest wait between two polls of one request. */
const MAX_POLL_INTERVAL_MS = 5 * 60_000;

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
  for (const runId of await ctx.rows.activeRunIds()) {
    const rowKeys = await ctx.rows.activeRowKeys(runId);
    for (let i = 0; i < rowKeys.length; i += SWEEP_CONCURRENCY) {
      await Promise.all(
        rowKeys.slice(i, i + SWEEP_CONCURRENCY).map(async (key) => {
          try {
            const row = await ctx.rows.getRow(runId, key);
            if (!row) return;
            counts.rows++;
            await reconcileRow(ctx, row, now, counts);
          } catch (err) {
            ctx.logger.warn({ runId, row: key, err: errorMessage(err) }, 'reconciling a row failed; next sweep tries again');
          }
        }),
      );
    }
  }
  return counts;
}

async function reconcileRow(ctx: Context, row: Row, now: number, counts: SweepCounts): Promise<void> {
  const { cfg } = ctx;
  if ((TERMINAL as readonly string[]).includes(row.state)) {
    // The process that ended the row flushes it right away; step in only when it evidently died.
    if (now - (row.finishedAt ?? 0) > cfg.JOB_LOCK_MS) {
      await flushRow(ctx, row.runId, row.key);
      counts.flushed++;
    }
    return;
  }
  if (now > row.deadlineAt && row.state !== 'storing') {
    const reason = `timed out: not finished within ROW_DEADLINE_MS (${cfg.ROW_DEADLINE_MS} ms)`;
    if (await ctx.rows.finishRow(row.runId, row.key, 'failed', reason, ['pending', 'submitting', 'submitted'])) {
      counts.timedOut++;
      if (row.requestId) await ctx.fal.queue.cancel(cfg.FAL_ENDPOINT, { requestId: row.requestId }).catch(() => undefined);
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
      if (now - (row.claimedAt ?? now) > cfg.RECONCILE_GRACE_MS) {
        await resubmit(ctx, row, 'submitting', undefined, 'the submission got no answer and no webhook came', counts);
      }
      return;
    case 'submitted':
      if (row.requestId && now >= (row.nextPollAt ?? 0)) await pollRequest(ctx, row, row.requestId, now, counts);
      return;
    case 'storing':
      if (row.storeRequestId && now - (row.storingSince ?? now) > cfg.JOB_LOCK_MS * 4) await redriveStore(ctx, row, row.storeRequestId, counts);
      return;
  }
}

/** No webhook within the grace period: ask fal. */
async function pollRequest(ctx: Context, row: Row, requestId: string, now: number, counts: SweepCounts): Promise<void> {
  counts.polled++;
  const endpoint = ctx.cfg.FAL_ENDPOINT;
  try {
    const status = (await ctx.fal.queue.status(endpoint, { requestId, logs: false })) as { status: string; error?: string; error_type?: string };
    if (status.status === 'COMPLETED') {
      if (status.error) {
        await addResult(ctx, { requestId, status: 'ERROR', error: status.error, payload: { detail: status.error_type }, source: 'poll', receivedAt: now });
      } else {
        const result = await ctx.fal.queue.result(endpoint, { requestId });
        await addResult(ctx, { requestId, status: 'OK', payload: result.data, source: 'poll', receivedAt: now });
      }
      return;
    }
    await ctx.rows.markPolled(row.runId, row.key, requestId, now + pollBackoff(row.polls, ctx.cfg.RECONCILE_INTERVAL_MS), status.status);
  } catch (raw) {
    const err = classifyFalError(raw);
    if (err instanceof FalNotFoundError) {
      await resubmit(ctx, row, 'submitted', requestId, `fal lost request ${requestId} (404)`, counts);
    } else if (err instanceof FalTransientError || err.name === 'FalAmbiguousError') {
      await ctx.rows.markPolled(row.runId, row.key, requestId, now + pollBackoff(row.polls, ctx.cfg.RECONCILE_INTERVAL_MS), 'UNREACHABLE');
    } else {
      // A result endpoint answering 4xx for a completed request means the request failed.
      await addResult(ctx, { requestId, status: 'ERROR', error: err.message, source: 'poll', receivedAt: now });
    }
  }
}

function pollBackoff(polls: number, interval: number): number {
  return Math.min(MAX_POLL_INTERVAL_MS, interval * 2 ** Math.min(polls, 10));
}

async function addResult(ctx: Context, r: ResultJob): Promise<void> {
  await ctx.queues.results.add('result', r, resultJobOptions(ctx.cfg, r.requestId, r.status));
}


async function resubmit(
  ctx: Context,
  row: Row,
  from: 'submitting' | 'submitted',
  requestId: string | undefined,
  reason: string,
  counts: SweepCounts,
): Promise<void> {
  const outcome = await ctx.rows.supersede(row.runId, row.key, from, row.attempt, requestId, reason, ctx.cfg.MAX_ATTEMPTS);
  if (outcome === 'failed') await flushRow(ctx, row.runId, row.key);
  if (outcome === 'resubmit') {
    counts.resubmitted++;
    ctx.logger.warn({ runId: row.runId, row: row.key, attempt: row.attempt, reason }, 'resubmitting as a new attempt');
    await addSubmitJob(ctx, row, row.attempt);
  }
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

export async function addSubmitJob(ctx: Context, row: Row, generation: number): Promise<void> {
  await ctx.queues.submit.add(
    'submit',
    { runId: row.runId, key: row.key, line: row.line, row: row.data },
    { jobId: jobIds.submit(row.runId, row.key, generation), ...submitJobOptions(ctx.cfg.SUBMIT_MAX_TRIES) },
  );
}


/** A row stuck in storing: its result job died. Fetch the result again and store it. */
async function redriveStore(ctx: Context, row: Row, requestId: string, counts: SweepCounts): Promise<void> {
  const job = await ctx.queues.results.getJob(jobIds.result(requestId, 'OK'));
  const state = job ? await job.getState() : 'missing';
  if (state === 'active' || state === 'waiting' || state === 'delayed' || state === 'prioritized') return;
  counts.redriven++;
  if (job && state === 'failed') {
    await job.retry();
    return;
  }
  if (job) await job.remove();
  try {
    const result = await ctx.fal.queue.result(ctx.cfg.FAL_ENDPOINT, { requestId });
    await addResult(ctx, { requestId, status: 'OK', payload: result.data, source: 'poll', receivedAt: Date.now() });
  } catch (raw) {
    const err = classifyFalError(raw);
    if (err instanceof FalTransientError || err.name === 'FalAmbiguousError') return; // next sweep
    const reason = `the result of ${requestId} could not be fetched again: ${errorText({ error: errorMessage(err) })}`;
    if (await ctx.rows.finishRow(row.runId, row.key, 'failed', reason, ['storing'], requestId)) await flushRow(ctx, row.runId, row.key);
  }
}
