// The rows of a run as the dashboard shows them: status, reason, face and portraits. A finished run is
// read from its report.csv (immutable once written, so kept parsed for a few runs); a run in progress
// from its manifest copy, each row's outcome looked up where it is now (Redis while in flight, its S3
// metadata once finished), up to SCAN_LIMIT rows.
import { extname } from 'node:path';
import { pipeline } from 'node:stream';
import { parse } from 'csv-parse';
import type { Context } from '../../core/context.ts';
import { runLayout } from '../../core/layout.ts';
import { lineSelected, type RunRecord } from '../../core/rowState.ts';
import { parseS3Url } from '../../core/s3.ts';
import { readManifest, readOptionsFor, unescapeCell } from '../../manifest/index.ts';
import type { RowMeta } from '../../worker/flush.ts';

export interface RowView {
  line: number;
  id: string;
  key: string;
  faceUrl: string;
  status: string;
  error: string;
  /** The error's category (falErrors.ts): input, content_policy, fal_transient, timeout, canceled, storage, other. */
  category: string;
  /** S3 keys of the stored portraits. */
  images: string[];
}

/** Failed (and rejected) rows of one error category, with the reasons seen most in it. */
export interface FailureGroup {
  category: string;
  /** The most common reason in the group. */
  reason: string;
  status: string;
  count: number;
  /** The first rows with this reason. */
  rows: RowView[];
}

export interface RowsPage {
  rows: RowView[];
  /** Rows matching the filter (among those scanned). */
  matched: number;
  byStatus: Record<string, number>;
  groups: FailureGroup[];
  scanned: number;
  /** False when a run in progress has more rows than SCAN_LIMIT. */
  complete: boolean;
}

/** Rows of a run in progress looked at for one page view (each may cost an S3 read). */
export const SCAN_LIMIT = 2000;
const ROWS_PER_GROUP = 10;
const LOOKUP_BATCH = 64;
const FINISHED_CACHE = 3;

const finishedRuns = new Map<string, RowView[]>();

export async function rowsPage(ctx: Context, run: RunRecord, q: { status?: string; page: number; pageSize: number }): Promise<RowsPage> {
  const all: RowView[] = [];
  let complete = true;
  if (run.finishedAt) all.push(...(await finishedRows(ctx, run)));
  else {
    for await (const r of liveRows(ctx, run)) {
      if (all.length >= SCAN_LIMIT) {
        complete = false;
        break;
      }
      all.push(r);
    }
  }
  const byStatus: Record<string, number> = {};
  const groups = new Map<string, FailureGroup>();
  const reasonCounts = new Map<FailureGroup, Map<string, number>>();
  for (const r of all) {
    byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
    if (r.status !== 'failed' && r.status !== 'rejected') continue;
    const reason = r.error || 'no reason was recorded';
    const category = r.category || (r.status === 'rejected' ? 'input' : 'other');
    const g = groups.get(`${r.status}\n${category}`) ?? { category, reason, status: r.status, count: 0, rows: [] };
    g.count++;
    if (g.rows.length < ROWS_PER_GROUP) g.rows.push(r);
    groups.set(`${r.status}\n${category}`, g);
    const counts = reasonCounts.get(g) ?? new Map<string, number>();
    counts.set(reason, (counts.get(reason) ?? 0) + 1);
    reasonCounts.set(g, counts);
  }
  for (const [g, counts] of reasonCounts) g.reason = [...counts].sort((a, b) => b[1] - a[1])[0]![0];
  const matching = q.status ? all.filter((r) => r.status === q.status) : all;
  const start = (q.page - 1) * q.pageSize;
  return {
    rows: matching.slice(start, start + q.pageSize),
    matched: matching.length,
    byStatus,
    groups: [...groups.values()].sort((a, b) => b.count - a.count),
    scanned: all.length,
    complete,
  };
}

async function finishedRows(ctx: Context, run: RunRecord): Promise<RowView[]> {
  const cached = finishedRuns.get(run.runId);
  if (cached) return cached;
  const rows: RowView[] = [];
  const csv = parse({ columns: true, bom: true });
  // pipeline hands an S3 read error to the parser, so the loop below throws instead of waiting forever.
  pipeline(await ctx.storage.getStream(runLayout(ctx.cfg.S3_PREFIX, run.runId).report), csv, () => undefined);
  for await (const rec of csv as AsyncIterable<Record<string, string>>) {
    const cell = (c: string) => unescapeCell(rec[c] ?? '');
    rows.push({
      line: Number(rec.line),
      id: cell('id'),
      key: cell('row_key'),
      faceUrl: cell('face_url'),
      status: rec.status ?? '',
      error: cell('error'),
      category: cell('error_category'),
      images: rec.images ? cell('images').split('|').filter(Boolean) : [],
    });
  }
  finishedRuns.set(run.runId, rows);
  if (finishedRuns.size > FINISHED_CACHE) finishedRuns.delete(finishedRuns.keys().next().value!);
  return rows;
}

/** A run in progress, in manifest order: rejected and canceled rows from their hashes, rows in flight from Redis, finished ones from S3. */
async function* liveRows(ctx: Context, run: RunRecord): AsyncGenerator<RowView> {
  const layout = runLayout(ctx.cfg.S3_PREFIX, run.runId);
  const selection = run.options.selected ? await ctx.rows.selectedLines(run.runId) : undefined;
  const opts = { ...readOptionsFor(ctx.cfg, run.options.baseDir as string | undefined), checkedLocalFaces: new Map<string, string>() };
  let batch: { line: number; key: string; id?: string; faceUrl: string }[] = [];
  const lookUp = async (): Promise<RowView[]> => {
    const lines = batch.map((r) => r.line);
    const [rejected, canceled] = await Promise.all([ctx.rows.rejectedReasons(run.runId, lines), ctx.rows.canceledReasons(run.runId, lines)]);
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
  for await (const row of readManifest(await ctx.storage.getStream(run.manifestKey), opts)) {
    if (selection && !lineSelected(selection, row.line)) continue;
    batch.push(row);
    if (batch.length >= LOOKUP_BATCH) yield* await lookUp();
  }
  if (batch.length) yield* await lookUp();
}

/** How long the thumbnails' presigned URLs work: a page left open keeps its pictures for this long. */
const THUMB_URL_SECONDS = 3600;

/** A URL the browser can load a row's face from, when there is one: the face as given, or presigned from S3. */
export async function faceSrc(ctx: Context, run: RunRecord, row: RowView): Promise<string | undefined> {
  const f = row.faceUrl;
  if (/^https?:\/\//i.test(f) || /^data:image\/(png|jpeg|webp|gif);base64,/i.test(f)) return f;
  if (/^s3:\/\//i.test(f)) {
    const { bucket, key } = parseS3Url(f);
    // Only buckets this deployment may read faces from are presigned with its credentials.
    if (bucket !== ctx.storage.bucket && !ctx.cfg.FACE_BUCKETS.includes(bucket)) return undefined;
    return ctx.storage.presign(key, THUMB_URL_SECONDS, bucket);
  }
  if (!run.options.localFaces || !f) return undefined;
  const facesRun = String(run.options.facesRunId ?? run.runId);
  return ctx.storage.presign(runLayout(ctx.cfg.S3_PREFIX, facesRun).input(row.key, extname(f).toLowerCase()), THUMB_URL_SECONDS);
}

export function portraitSrc(ctx: Context, key: string): Promise<string> {
  return ctx.storage.presign(key, THUMB_URL_SECONDS);
}
