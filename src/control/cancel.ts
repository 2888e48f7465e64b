// Canceling a run: one atomic script stops all submitting (claimSubmit and the producer read the run's
// state), then the workers' `cancel` job ends what is in flight: pending rows end canceled, every
// request still queued at fal is canceled there and its row ends canceled, a submission still waiting
// for its answer is resolved by its answer (canceled at once) or by the grace period. Rows already
// finished stay as they are; rows storing a result finish storing.
import type { Context } from '../core/context.ts';
import { RunControlError } from './errors.ts';

export interface CancelResult {
  runId: string;
  /** canceled: just now; already: it was canceled before; finished: it was over, nothing changed. */
  outcome: 'canceled' | 'already' | 'finished';
  state: string;
}

export async function cancelRun(ctx: Context, runId: string, reason = 'canceled by request'): Promise<CancelResult> {
  const outcome = await ctx.rows.cancelRun(runId, reason);
  if (outcome === 'norun') throw new RunControlError(`no run ${runId}`);
  if (outcome !== 'finished') {
    // Any worker does the fal side (it holds FAL_KEY); the reconciler repeats it until the run ends.
    await ctx.queues.control.add('cancel', { runId }, { jobId: `c~${runId}~${Date.now()}`, removeOnComplete: true, removeOnFail: 100, attempts: 3 });
  }
  const run = await ctx.rows.getRun(runId);
  return { runId, outcome, state: run?.state ?? 'canceled' };
}
