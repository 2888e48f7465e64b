// Retrying a run: a new run made of the original's failed rows — the same manifest lines, so the same
// parameters and row keys — read from the original's manifest copy, with its uploaded faces and its
// policy. The two runs name each other (retryOf / retriedBy), in Redis and in both summary.json files.
import { pipeline } from 'node:stream';
import { parse } from 'csv-parse';
import type { Context } from '../core/context.ts';
import { runLayout } from '../core/layout.ts';
import { ERROR_CATEGORIES, type ErrorCategory } from '../core/falErrors.ts';
import { keys } from '../core/keys.ts';
import { faceRuleFor, storedFaceRule } from '../manifest/index.ts';
import { manifestSource } from '../manifest/source.ts';
import { startRun, type StartedRun } from '../producer/produce.ts';
import { summaryOf } from '../worker/finalize.ts';
import { RunControlError } from './errors.ts';

export interface RetryResult extends StartedRun {
  retryOf: string;
  rows: number;
}

/**
 * `only`: the error categories to retry (falErrors.ts ERROR_CATEGORIES, e.g. input, fal_transient);
 * default every failed row. A row whose report has no category (a report written before categories)
 * counts as 'other'.
 */
export async function retryFailed(ctx: Context, runId: string, opts: { only?: readonly ErrorCategory[] } = {}): Promise<RetryResult> {
  const bad = opts.only?.find((c) => !(ERROR_CATEGORIES as readonly string[]).includes(c));
  if (bad !== undefined) throw new RunControlError(`--only: ${JSON.stringify(bad)} is not an error category (one of ${ERROR_CATEGORIES.join(', ')})`);
  const run = await ctx.rows.getRun(runId);
  if (!run) throw new RunControlError(`no run ${runId}`);
  if (!run.finishedAt) throw new RunControlError(`run ${runId} is still ${run.state}: retry it once it has finished`);
  const layout = runLayout(ctx.cfg.S3_PREFIX, runId);
  const lines: number[] = [];
  const report = parse({ columns: true, bom: true });
  pipeline(await ctx.storage.getStream(layout.report), report, () => undefined);
  const wanted = (r: Record<string, string>) => !opts.only || opts.only.includes((r.error_category || 'other') as ErrorCategory);
  for await (const r of report as AsyncIterable<Record<string, string>>) if (r.status === 'failed' && wanted(r)) lines.push(Number(r.line));
  if (!lines.length) {
    throw new RunControlError(`run ${runId} has no failed rows to retry${opts.only ? ` in ${opts.only.join(', ')}` : ''}`);
  }

  const n = await ctx.redis.hincrby(keys.run(runId), 'retries', 1);
  const newId = `${runId.slice(0, 110)}-retry${n}`;
  const src = { ...manifestSource(`s3://${ctx.storage.bucket}/${run.manifestKey}`, ctx.storage), baseDir: run.options.baseDir as string | undefined };
  const started = await startRun(ctx, src, {
    runId: newId,
    lines,
    facesRunId: String(run.options.facesRunId ?? runId),
    // The original's faces, by the original's rule (its manifest copy's folder is runs/, never a face folder).
    faces: storedFaceRule(run.options) ?? faceRuleFor(ctx.cfg),
    policy: { ...run.policy, maxCost: null },
    extra: { retryOf: runId, manifestOf: run.manifest },
  });
  await ctx.rows.linkRetry(runId, newId);
  // The original's summary names its retries. Another retry may link itself meanwhile: the summary is
  // written again until it was written from the newest list (links only grow, so this ends).
  for (let written: string | undefined; ; ) {
    const updated = await ctx.rows.getRun(runId);
    if (!updated?.finishedAt || updated.retriedBy.join(',') === written) break;
    await ctx.storage.putJson(layout.summary, summaryOf(updated, updated.state));
    written = updated.retriedBy.join(',');
  }
  return { ...started, retryOf: runId, rows: lines.length };
}
