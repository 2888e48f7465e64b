// A run's summary (summary.json, `status --json`, the completion notice): its counts, cost and links,
// from the run record. Finalize writes it; status, retry and the notice read the same object.
import { basename } from 'node:path';
import type { Context } from '../core/context.ts';
import { runLayout } from '../core/layout.ts';
import { roundMoney } from '../core/cost.ts';
import type { RunRecord } from '../core/rowState.ts';
import { fromMicros } from '../core/runPolicy.ts';

export function summaryOf(run: RunRecord, state: string) {
  return {
    runId: run.runId,
    state,
    total: run.total ?? run.queued + run.rejected,
    completed: run.completed,
    failed: run.failed,
    /** Failed rows by their error's category (input, content_policy, fal_transient, timeout, canceled, storage, other). */
    failedByCategory: run.failedByCategory,
    rejected: run.rejected,
    canceled: run.canceled,
    startedAt: new Date(run.createdAt).toISOString(),
    finishedAt: run.finishedAt ? new Date(run.finishedAt).toISOString() : null,
    submits: run.submits,
    // A local manifest by file name only (never the starter's paths); an S3 one by its URL.
    manifest: run.manifest.startsWith('s3://') ? run.manifest : basename(run.manifest),
    manifestSha256: typeof run.options.sha256 === 'string' ? run.options.sha256 : null,
    stopReason: run.stopReason ?? null,
    /** Estimated cost of the whole manifest when the run was started. */
    estimatedCost: roundMoney(Number(run.options.estimatedCost ?? 0)),
    /** Billed: the estimate of each submission fal accepted, less those fal failed without billing (server errors). */
    cost: fromMicros(run.costMicros),
    /** Every submission fal accepted, billed or not. */
    submittedCost: fromMicros(run.submittedCostMicros),
    maxCost: run.policy.maxCost,
    currency: run.policy.currency,
    /** Retries link both ways: the run this one retries, and the runs that retried this one. */
    retryOf: (run.options.retryOf as string | undefined) ?? null,
    retriedBy: run.retriedBy,
  };
}
export type Summary = ReturnType<typeof summaryOf>;

/** A run's summary.json (written when it finished), for a run Redis no longer holds (RUN_RETENTION). */
export async function finishedSummary(ctx: Context, runId: string): Promise<Summary | undefined> {
  // A string that cannot be a run id never names an object (run ids are checked when a run starts).
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(runId)) return undefined;
  return (await ctx.storage.getJson<Summary>(runLayout(ctx.cfg.S3_PREFIX, runId).summary)) ?? undefined;
}
