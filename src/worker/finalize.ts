// When every row of a run is terminal: write report.csv (one line per manifest row, in manifest
// order, rejected rows included) and summary.json. The report is built from the manifest copy in S3
// and the rows' outcomes as written when they finished (batched report parts, and each row's metadata
// object for a line no part holds), so it agrees with S3 by construction and any worker can write it.
import { stringify } from 'csv-stringify';
import type { Context } from '../core/context.ts';
import { runLayout } from '../core/layout.ts';
import { lineSelected, type RunRecord } from '../core/rowState.ts';
import { enqueueRunNotice } from '../outputs/notify.ts';
import { summaryOf, type Summary } from '../outputs/summary.ts';
import { escapeCell, isRejected, readManifest, type ManifestRow } from '../manifest/index.ts';
import type { RowMeta } from './flush.ts';
import { outcomeOf, partsReader, rejectedOutcome, removeReportParts, type ReportOutcome } from '../outputs/reportParts.ts';
import { writeReportIndex } from './reportIndex.ts';
import { uploadWhileWriting } from './uploadWhileWriting.ts';

export const REPORT_COLUMNS = ['line', 'id', 'row_key', 'face_url', 'status', 'request_id', 'attempts', 'images', 'seed', 'error', 'error_type', 'error_category', 'face_width', 'face_height', 'face_sha256'] as const;

/** Rows looked up in S3 at once while writing the report. */
const META_BATCH = 64;

/**
 * What the report counts, set on the run as it finishes: the counters are kept in Redis as rows end, and
 * a Redis that restarted without its last writes may have taken some back (a row ended again counts
 * again only if its first ending was lost). The report is built from the rows' outcomes in S3, so its
 * counts are the run's. Submits and cost are never lowered below what was counted: the report's
 * attempts miss submissions whose answer was lost; a shortfall of submits adds their average cost.
 */
class ReportTally {
  private readonly n = { completed: 0, failed: 0, rejected: 0, canceled: 0, submits: 0 };

  count(record: Record<string, string>, submitted: boolean): void {
    const s = record.status as keyof typeof this.n;
    if (s in this.n && s !== 'submits') this.n[s]++;
    if (submitted) this.n.submits += Number(record.attempts) || 0;
  }

  correct(ctx: Context, run: RunRecord): Pick<RunRecord, 'completed' | 'failed' | 'rejected' | 'canceled' | 'submits' | 'costMicros'> {
    const submits = Math.max(run.submits, this.n.submits);
    const costMicros = run.submits > 0 ? Math.round((run.costMicros * submits) / run.submits) : run.costMicros;
    const fixed = { completed: this.n.completed, failed: this.n.failed, rejected: this.n.rejected, canceled: this.n.canceled, submits, costMicros };
    const was = { completed: run.completed, failed: run.failed, rejected: run.rejected, canceled: run.canceled, submits: run.submits, costMicros: run.costMicros };
    if (Object.entries(fixed).some(([k, v]) => was[k as keyof typeof was] !== v)) {
      ctx.logger.warn({ runId: run.runId, counted: was, report: fixed }, `run ${run.runId}: counters corrected from its report (Redis lost some of its writes)`);
    }
    return fixed;
  }
}

export async function writeRunReport(ctx: Context, runId: string): Promise<Summary | undefined> {
  const run = await ctx.rows.getRun(runId);
  if (!run) return undefined;
  // Written once: a late duplicate trigger must not rewrite a report someone may be reading. The notice
  // is queued again (once per run by its job id): the finalize that ended the run may have died before.
  if (run.finishedAt) {
    const summary = summaryOf(run, run.state);
    await enqueueRunNotice(ctx, summary);
    return summary;
  }
  const layout = runLayout(ctx.cfg.S3_PREFIX, runId);
  const csv = stringify({ header: true, columns: [...REPORT_COLUMNS] });
  const tally = new ReportTally();
  const uploading = ctx.storage.upload(layout.report, csv, 'text/csv; charset=utf-8');
  // Ended only when complete: a failure part-way destroys the stream, so no truncated report is stored.
  const writing = (async () => {
    let batch: ManifestRow[] = [];
    const flush = async () => {
      // Rejected rows are in the parts (written by the producer); canceled-before-enqueued ones in Redis.
      const cancels = anyCanceled ? await ctx.rows.canceledReasons(runId, batch.map((r) => r.line)) : [];
      const batched: (ReportOutcome | undefined)[] = [];
      for (const r of batch) batched.push(await parts.take(r.line));
      const rejectedAt = (i: number) => batched[i]?.status === 'rejected';
      const metas = await Promise.all(
        batch.map((r, i) => (cancels[i] || batched[i] ? undefined : ctx.storage.getJson<RowMeta>(layout.meta(r.key)))),
      );
      batch.forEach((r, i) => {
        const meta = metas[i];
        const canceled = !rejectedAt(i) && cancels[i];
        // A rejected row whose part was lost (no metadata either): its verdict as the manifest gives it again.
        const outcome = batched[i] ?? (meta ? outcomeOf(meta) : isRejected(r) ? rejectedOutcome(`${r.rejected.column}: ${r.rejected.reason}`) : undefined);
        const record: Record<string, string> = rejectedAt(i)
          ? { status: 'rejected', error: batched[i]!.error, error_type: batched[i]!.error_type || 'rejected', error_category: 'input' }
          : canceled
            ? { status: 'canceled', error: canceled, error_type: 'run_canceled', error_category: 'canceled' }
            : outcome
            ? { ...outcome }
            : { status: 'failed', error: 'no outcome was recorded for this row' };
        tally.count(record, !rejectedAt(i) && !canceled);
        const cells: Record<string, string> = { line: String(r.line), id: r.id ?? '', row_key: r.key, face_url: r.faceUrl, ...record };
        csv.write(Object.fromEntries(REPORT_COLUMNS.map((c) => [c, escapeCell(cells[c] ?? '')])));
      });
      batch = [];
    };
    const selection = run.options.selected ? await ctx.rows.selectedLines(runId) : undefined;
    const anyCanceled = await ctx.rows.hasCanceledReasons(runId);
    const parts = await partsReader(ctx, runId, await ctx.rows.redisRestartsSeen(runId));
    // Faces are not looked at again: each row's outcome is in Redis or its metadata already.
    const opts = { baseDir: run.options.baseDir as string | undefined, checkedLocalFaces: new Map<string, string>() };
    for await (const row of readManifest(await ctx.storage.getStream(run.manifestKey), opts)) {
      if (selection && !lineSelected(selection, row.line)) continue;
      batch.push(row);
      if (batch.length >= META_BATCH) await flush();
    }
    await flush();
    csv.end();
  })();
  await uploadWhileWriting(csv, uploading, writing);

  const state = run.state === 'stopped' || run.state === 'canceled' ? run.state : 'finished';
  const finishedAt = run.finishedAt ?? Date.now();
  const counters = tally.correct(ctx, run);
  const summary = summaryOf({ ...run, ...counters, finishedAt }, state);
  await ctx.storage.putJson(layout.summary, summary);
  // The dashboard's way into the report; without it the first view of the run writes it.
  await writeReportIndex(ctx, runId).catch((err: unknown) =>
    ctx.logger.warn({ runId, err: err instanceof Error ? err.message : String(err) }, 'the report index could not be written; the dashboard writes it on its first view of the run'),
  );
  // Before the run is marked finished: a finalize that dies here runs again and removes them then.
  await removeReportParts(ctx, runId);
  // The run's finishedAt is the one summary.json holds: a notice or status built from the run agrees with it.
  if ((await ctx.rows.finishRun(runId, state, finishedAt, counters, ctx.cfg.RUN_RETENTION)) === 'open') {
    // Redis took back the run's last second: its rows finish again, and this job (retried) or theirs writes the report then.
    throw new Error(`run ${runId} has rows in flight again (Redis restarted without its last writes); its report is written once they end`);
  }
  ctx.logger.info({ ...summary, milestone: 'finished' }, `run ${runId} finished: ${summary.completed} completed, ${summary.failed} failed, ${summary.rejected} rejected, ${summary.canceled} canceled`);
  await enqueueRunNotice(ctx, summary);
  return summary;
}
