// An index of a finished run's report.csv, so a page of its rows costs a page of reads, whatever the
// run's size: where each report line starts and how long it is (fixed-width entries, read by byte
// range), the same for the lines of each status, the count of each status, and the failures grouped
// by reason with their first rows. Written once when the run finishes (one more read of the report);
// a run finished before it existed, or whose index could not be written, gets it on its first view.
//
// report-index/index.json   version, columns, rows, byStatus, groups
// report-index/all.bin      per report line, in order: offset (6 bytes) + length (4 bytes), big-endian
// report-index/<status>.bin the same, for the lines of one status
import { pipeline } from 'node:stream';
import { parse } from 'csv-parse';
import { parse as parseSync } from 'csv-parse/sync';
import type { Context } from '../core/context.ts';
import { runLayout } from '../core/layout.ts';
import { unescapeCell } from '../manifest/index.ts';

// 2: failure groups by error category (falErrors.ts), not by reason text.
export const REPORT_INDEX_VERSION = 2;
/** Bytes of one entry: a 6-byte offset (reports up to 256 TiB) and a 4-byte length. */
export const ENTRY_BYTES = 10;
/** Rows kept for each failure group, and groups kept (largest first). */
const ROWS_PER_GROUP = 10;
const GROUPS_KEPT = 50;
/** Distinct reasons counted at most in a group (to name its most common one); further ones are not. */
const REASONS_COUNTED = 10_000;
/** Page reads closer than this are one range read. */
const COALESCE_GAP_BYTES = 64 * 1024;

/** A report line as the dashboard shows it. */
export interface ReportRow {
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

/** Failed (or rejected) rows of one error category, with the reason seen most among them. */
export interface FailureGroup {
  category: string;
  /** The most common reason in the group. */
  reason: string;
  status: string;
  count: number;
  /** The first rows of the group. */
  rows: ReportRow[];
}

export interface ReportIndex {
  version: number;
  columns: string[];
  rows: number;
  byStatus: Record<string, number>;
  groups: FailureGroup[];
}

/**
 * What failed and rejected rows are grouped by — their error category (a report without one: rejected
 * rows are the input, others 'other') — one place, so the index and a run in progress agree.
 */
export function failureGroupOf(r: ReportRow): { status: string; category: string; reason: string } | undefined {
  if (r.status !== 'failed' && r.status !== 'rejected') return undefined;
  return { status: r.status, category: r.category || (r.status === 'rejected' ? 'input' : 'other'), reason: r.error || 'no reason was recorded' };
}

/** Counts failure groups while rows go by, keeping the first rows of each and its most common reason. */
export class FailureGroups {
  private readonly groups = new Map<string, FailureGroup>();
  private readonly reasons = new Map<FailureGroup, Map<string, number>>();

  add(r: ReportRow): void {
    const g = failureGroupOf(r);
    if (!g) return;
    const id = `${g.status}\n${g.category}`;
    const group = this.groups.get(id) ?? { category: g.category, reason: g.reason, status: g.status, count: 0, rows: [] };
    group.count++;
    if (group.rows.length < ROWS_PER_GROUP) group.rows.push(r);
    this.groups.set(id, group);
    const counts = this.reasons.get(group) ?? new Map<string, number>();
    // Distinct reasons counted at most REASONS_COUNTED a group; further ones are not (the group still counts the row).
    if (counts.has(g.reason) || counts.size < REASONS_COUNTED) counts.set(g.reason, (counts.get(g.reason) ?? 0) + 1);
    this.reasons.set(group, counts);
  }

  largest(n = GROUPS_KEPT): FailureGroup[] {
    for (const [group, counts] of this.reasons) group.reason = [...counts].sort((a, b) => b[1] - a[1])[0]?.[0] ?? group.reason;
    return [...this.groups.values()].sort((a, b) => b.count - a.count).slice(0, n);
  }
}

/** A report record (columns by name, cells as written) as the dashboard shows it. */
export function reportRow(rec: Record<string, string>): ReportRow {
  const cell = (c: string) => unescapeCell(rec[c] ?? '');
  return {
    line: Number(rec.line),
    id: cell('id'),
    key: cell('row_key'),
    faceUrl: cell('face_url'),
    status: rec.status ?? '',
    error: cell('error'),
    category: cell('error_category'),
    images: rec.images ? cell('images').split('|').filter(Boolean) : [],
  };
}

const layoutOf = (ctx: Context, runId: string) => runLayout(ctx.cfg.S3_PREFIX, runId);
const binKey = (ctx: Context, runId: string, status: string | undefined) => `${layoutOf(ctx, runId).reportIndex}${status ?? 'all'}.bin`;

/** Entries appended into one growing buffer (10^6 lines: 10 MB, not 10^6 small buffers). */
class Entries {
  private buf = Buffer.alloc(ENTRY_BYTES * 1024);
  count = 0;

  add(offset: number, length: number): void {
    if ((this.count + 1) * ENTRY_BYTES > this.buf.length) {
      const bigger = Buffer.alloc(this.buf.length * 2);
      this.buf.copy(bigger);
      this.buf = bigger;
    }
    this.buf.writeUIntBE(offset, this.count * ENTRY_BYTES, 6);
    this.buf.writeUInt32BE(length, this.count * ENTRY_BYTES + 6);
    this.count++;
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.count * ENTRY_BYTES);
  }
}

/** Reads the run's report once and writes its index. */
export async function writeReportIndex(ctx: Context, runId: string): Promise<ReportIndex> {
  const layout = layoutOf(ctx, runId);
  const csv = parse({ columns: true, bom: true, info: true });
  // pipeline hands an S3 read error to the parser, so the loop below throws instead of waiting forever.
  pipeline(await ctx.storage.getStream(layout.report), csv, () => undefined);
  const all = new Entries();
  const perStatus = new Map<string, Entries>();
  const groups = new FailureGroups();
  let columns: string[] = [];
  let start: number | undefined;
  for await (const { record, info } of csv as AsyncIterable<{ record: Record<string, string>; info: { bytes: number; columns: { name: string }[] } }>) {
    if (start === undefined) {
      columns = info.columns.map((c) => c.name);
      // The header's end: the first record starts where the header's line ended.
      start = await headerLength(ctx, layout.report);
    }
    const [offset, length] = [start, info.bytes - start];
    start = info.bytes;
    all.add(offset, length);
    const row = reportRow(record);
    let list = perStatus.get(row.status);
    if (!list) perStatus.set(row.status, (list = new Entries()));
    list.add(offset, length);
    groups.add(row);
  }
  const index: ReportIndex = {
    version: REPORT_INDEX_VERSION,
    columns,
    rows: all.count,
    byStatus: Object.fromEntries([...perStatus].map(([s, l]) => [s, l.count])),
    groups: groups.largest(),
  };
  await ctx.storage.upload(binKey(ctx, runId, undefined), all.bytes(), 'application/octet-stream');
  for (const [status, list] of perStatus) {
    if (/^[a-z]+$/.test(status)) await ctx.storage.upload(binKey(ctx, runId, status), list.bytes(), 'application/octet-stream');
  }
  // Last: its presence says the entries are complete.
  await ctx.storage.putJson(`${layout.reportIndex}index.json`, index);
  return index;
}

/** Bytes of the report's header line (with its line break and any BOM): the first line is plain column names. */
async function headerLength(ctx: Context, key: string): Promise<number> {
  const head = await ctx.storage.getRange(key, 0, 4095);
  const nl = head.indexOf(0x0a);
  if (nl < 0) throw new Error(`${key} has no header line within its first 4 KiB`);
  return nl + 1;
}

const building = new Map<string, Promise<ReportIndex>>();
/** Indexes read lately (a finished run's report, so its index, never changes), by bucket and key. */
const recent = new Map<string, ReportIndex>();
const RECENT_KEPT = 8;

/** The run's index: read (or remembered), or written now when it is missing (once per process at a time). */
export async function reportIndexOf(ctx: Context, runId: string): Promise<ReportIndex> {
  const key = `${layoutOf(ctx, runId).reportIndex}index.json`;
  const cacheKey = `${ctx.storage.bucket}/${key}`;
  const cached = recent.get(cacheKey);
  if (cached) return cached;
  const found = await ctx.storage.getJson<ReportIndex>(key);
  if (found?.version === REPORT_INDEX_VERSION) {
    recent.set(cacheKey, found);
    if (recent.size > RECENT_KEPT) recent.delete(recent.keys().next().value!);
    return found;
  }
  let pending = building.get(runId);
  if (!pending) {
    pending = writeReportIndex(ctx, runId).finally(() => building.delete(runId));
    building.set(runId, pending);
  }
  return pending;
}

/** Forgets a remembered index (its objects were found missing). */
export function forgetReportIndex(ctx: Context, runId: string): void {
  recent.delete(`${ctx.storage.bucket}/${layoutOf(ctx, runId).reportIndex}index.json`);
}

/** One page of a finished run's rows (of one status, or all): two range reads of the index and the report, whatever the run's size. */
export async function reportPage(ctx: Context, runId: string, index: ReportIndex, q: { status?: string; page: number; pageSize: number }): Promise<{ rows: ReportRow[]; matched: number }> {
  const matched = q.status ? (index.byStatus[q.status] ?? 0) : index.rows;
  const first = (q.page - 1) * q.pageSize;
  const last = Math.min(matched, first + q.pageSize);
  if (first >= last) return { rows: [], matched };
  const raw = await ctx.storage.getRange(binKey(ctx, runId, q.status), first * ENTRY_BYTES, last * ENTRY_BYTES - 1);
  const entries: { offset: number; length: number }[] = [];
  for (let i = 0; i + ENTRY_BYTES <= raw.length; i += ENTRY_BYTES) entries.push({ offset: raw.readUIntBE(i, 6), length: raw.readUInt32BE(i + 6) });
  // Lines of one status may be spread out: neighbours are read together, far ones apart (at most a page of reads).
  const ranges: { from: number; to: number; entries: typeof entries }[] = [];
  for (const e of entries) {
    const r = ranges[ranges.length - 1];
    if (r && e.offset >= r.to && e.offset - r.to <= COALESCE_GAP_BYTES) {
      r.to = e.offset + e.length;
      r.entries.push(e);
    } else ranges.push({ from: e.offset, to: e.offset + e.length, entries: [e] });
  }
  const report = layoutOf(ctx, runId).report;
  const chunks = await Promise.all(ranges.map((r) => ctx.storage.getRange(report, r.from, r.to - 1)));
  const rows: ReportRow[] = [];
  ranges.forEach((r, i) => {
    for (const e of r.entries) {
      const bytes = chunks[i]!.subarray(e.offset - r.from, e.offset - r.from + e.length);
      const [rec] = parseSync(bytes, { columns: index.columns, relax_column_count: true }) as Record<string, string>[];
      if (rec) rows.push(reportRow(rec));
    }
  });
  return { rows, matched };
}
