// The rows of a run as the dashboard shows them: status, reason, face and portraits. A finished run is
// read through its report index (worker/reportIndex.ts): counts, failure groups and one page of
// report lines by byte range, so a page costs the same for 10 rows or 10^6. A run in progress is read
// from its manifest copy, each row's outcome looked up where it is now (Redis while in flight, its S3
// metadata once finished), up to SCAN_LIMIT rows and SCAN_BYTES of manifest.
import { pipeline, Transform } from 'node:stream';
import type { Context } from '../../core/context.ts';
import { runLayout } from '../../core/layout.ts';
import { lineSelected, type RunRecord } from '../../core/rowState.ts';
import { readManifest, readOptionsFor, storedFaceRule } from '../../manifest/index.ts';
import type { RowMeta } from '../../worker/flush.ts';
import { partsReader } from '../../outputs/reportParts.ts';
import { FailureGroups, forgetReportIndex, reportIndexOf, reportPage, type FailureGroup, type ReportRow } from '../../worker/reportIndex.ts';

export type RowView = ReportRow;
export type { FailureGroup };

export interface RowsPage {
  rows: RowView[];
  /** Rows matching the filter (among those scanned). */
  matched: number;
  byStatus: Record<string, number>;
  groups: FailureGroup[];
  scanned: number;
  /** False when a run in progress has more rows than SCAN_LIMIT (or more manifest than SCAN_BYTES). */
  complete: boolean;
}

/** Rows of a run in progress looked at for one page view (each may cost an S3 read). */
export const SCAN_LIMIT = 2000;
/** Manifest bytes of a run in progress read for one page view (blank lines and comments count too). */
export const SCAN_BYTES = 8 * 1024 * 1024;
const LOOKUP_BATCH = 64;

export async function rowsPage(ctx: Context, run: RunRecord, q: { status?: string; page: number; pageSize: number }): Promise<RowsPage> {
  if (run.finishedAt) {
    let index = await reportIndexOf(ctx, run.runId);
    let page;
    try {
      page = await reportPage(ctx, run.runId, index, q);
    } catch (err) {
      if ((err as { name?: string }).name !== 'NoSuchKey') throw err;
      // A remembered index whose objects are gone (removed, or the run's outputs expired): read it again.
      forgetReportIndex(ctx, run.runId);
      index = await reportIndexOf(ctx, run.runId);
      page = await reportPage(ctx, run.runId, index, q);
    }
    return { rows: page.rows, matched: page.matched, byStatus: index.byStatus, groups: index.groups, scanned: index.rows, complete: true };
  }
  const all: RowView[] = [];
  let complete = true;
  for await (const r of liveRows(ctx, run)) {
    if (r === SCAN_CUT || all.length >= SCAN_LIMIT) {
      complete = false;
      break;
    }
    all.push(r);
  }
  const byStatus: Record<string, number> = {};
  const groups = new FailureGroups();
  for (const r of all) {
    byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
    groups.add(r);
  }
  const matching = q.status ? all.filter((r) => r.status === q.status) : all;
  const start = (q.page - 1) * q.pageSize;
  return {
    rows: matching.slice(start, start + q.pageSize),
    matched: matching.length,
    byStatus,
    groups: groups.largest(),
    scanned: all.length,
    complete,
  };
}

/** Yielded once SCAN_BYTES of the manifest were read: the scan stops there. */
const SCAN_CUT = Symbol('scan cut');

/** Passes the manifest's bytes on until SCAN_BYTES, then fails the read (cut() tells it was this). */
function scanBudget(): { stream: Transform; cut: () => boolean } {
  let seen = 0;
  let cut = false;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen <= SCAN_BYTES) return done(null, chunk);
      cut = true;
      done(new Error(`the page reads at most ${SCAN_BYTES} bytes of a manifest`));
    },
  });
  return { stream, cut: () => cut };
}

/** A run in progress, in manifest order: rejected rows from the report parts, canceled ones from their hash, rows in flight from Redis, finished ones from S3. */
async function* liveRows(ctx: Context, run: RunRecord): AsyncGenerator<RowView | typeof SCAN_CUT> {
  const layout = runLayout(ctx.cfg.S3_PREFIX, run.runId);
  const selection = run.options.selected ? await ctx.rows.selectedLines(run.runId) : undefined;
  const opts = { ...readOptionsFor(ctx.cfg, run.options.baseDir as string | undefined, storedFaceRule(run.options)), checkedLocalFaces: new Map<string, string>() };
  let batch: { line: number; key: string; id?: string; faceUrl: string }[] = [];
  const parts = await partsReader(ctx, run.runId);
  const lookUp = async (): Promise<RowView[]> => {
    const canceled = await ctx.rows.canceledReasons(run.runId, batch.map((r) => r.line));
    const rejected: (string | undefined)[] = [];
    for (const r of batch) {
      const o = await parts.take(r.line);
      rejected.push(o?.status === 'rejected' ? o.error : undefined);
    }
    const views = await Promise.all(
      batch.map(async (r, i): Promise<RowView> => {
        const base = { line: r.line, id: r.id ?? '', key: r.key, faceUrl: r.faceUrl, images: [] as string[], category: '' };
        if (rejected[i]) return { ...base, status: 'rejected', error: rejected[i]!, category: 'input' };
        if (canceled[i]) return { ...base, status: 'canceled', error: canceled[i]!, category: 'canceled' };
        if (r.line > run.cursor) return { ...base, status: 'pending', error: '' };
        const live = await ctx.rows.getRow(run.runId, r.key);
        if (live) {
          const category = live.errorCategory ?? '';
          return { ...base, status: live.state, error: live.error ?? live.lastError ?? '', category, images: (live.images ?? []).map((im) => im.key) };
        }
        const meta = await ctx.storage.getJson<RowMeta>(layout.meta(r.key));
        if (meta) return { ...base, status: meta.status, error: meta.error ?? '', category: meta.error_category ?? '', images: meta.images.map((im) => im.key) };
        return { ...base, status: 'pending', error: '' };
      }),
    );
    batch = [];
    return views;
  };
  const budget = scanBudget();
  pipeline(await ctx.storage.getStream(run.manifestKey), budget.stream, () => undefined);
  try {
    for await (const row of readManifest(budget.stream, opts)) {
      if (selection && !lineSelected(selection, row.line)) continue;
      batch.push(row);
      if (batch.length >= LOOKUP_BATCH) yield* await lookUp();
    }
  } catch (err) {
    if (!budget.cut()) throw err;
    if (batch.length) yield* await lookUp();
    yield SCAN_CUT;
    return;
  }
  if (batch.length) yield* await lookUp();
}
