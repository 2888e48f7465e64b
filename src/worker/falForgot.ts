// A result fal finished whose files (or whose result) are gone before we stored it. When fal itself no
// longer knows the request — its status call answers 404: fal restarted without its requests — nothing
// will ever bring that result back, so the row gets a new attempt, counted apart (the run's
// `resubmittedForgotten`), not failed. When fal still knows the request, nothing is resubmitted (that
// would pay twice for a request fal has): the caller fails the row as before. A download that failed
// for any other reason (a timeout, a 5xx, a refused connection) is only tried again.
import type { Context } from '../core/context.ts';
import { DownloadError, FalNotFoundError, FalRejectedError } from '../core/errors.ts';
import { classifyFalError } from '../core/fal.ts';
import { addSubmitJob } from '../core/queues.ts';
import type { Row } from '../core/rowState.ts';
import { flushRow } from './flush.ts';

/** A failure that says the result is gone: its file answered 404/410, or fal's result call 404. */
export function isGoneResult(err: unknown): boolean {
  if (!(err instanceof DownloadError)) return false;
  return err.status === 404 || err.status === 410 || err.errorType === 'result_expired';
}

/**
 * Whether fal still knows `requestId` (its status call answers). False only on a 404; a fal that is
 * unreachable or answers 5xx throws (the caller's job waits out the outage or tries again).
 */
export async function falKnowsRequest(ctx: Context, endpoint: string, requestId: string): Promise<boolean> {
  try {
    await ctx.fal.queue.status(endpoint, { requestId, logs: false });
    return true;
  } catch (raw) {
    const err = classifyFalError(raw);
    if (err instanceof FalNotFoundError) return false;
    // Any other answer about the request (a 4xx): fal knows something of it; never resubmitted on that.
    if (err instanceof FalRejectedError) return true;
    throw err;
  }
}

/**
 * The row storing `requestId`, a request fal forgot: a new attempt within MAX_ATTEMPTS (or failed at
 * the limit). Only for the row's current attempt; an older attempt's result leaves the row as it is
 * ('noop'). Said at info level: the restart itself is what an operator needs to hear of, once.
 */
export async function resubmitForgotten(ctx: Context, row: Row, requestId: string, why: string): Promise<'resubmitted' | 'failed' | 'noop'> {
  const reason = `fal no longer knows request ${requestId} (404; it restarted without it): ${why}`;
  const outcome = await ctx.rows.supersede(row.runId, row.key, 'storing', row.attempt, requestId, reason, { type: 'lost', category: 'fal_transient' }, true);
  if (outcome === 'failed') await flushRow(ctx, row.runId, row.key);
  if (outcome !== 'resubmit') return outcome;
  ctx.logger.info({ runId: row.runId, row: row.key, attempt: row.attempt, requestId, reason }, 'fal forgot a finished request: resubmitting as a new attempt');
  await addSubmitJob(ctx, row, row.attempt);
  return 'resubmitted';
}
