// The report's lines of finished rows, written to S3 in batches while a run goes, so the report is
// built from a few objects instead of one metadata read per row. They are a cache of the metadata
// objects, not a replacement: a line not found in any part (its process died before writing its
// batch, or another worker's batch is still being gathered) is read from the row's metadata, so a
// lost batch costs reads, never a line. The parts are removed once the report is written.
import { randomUUID } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { Context } from '../core/context.ts';
import { DependencyError, asS3Failure, outageOf } from '../core/dependencies.ts';
import { runLayout } from '../core/layout.ts';
import type { Storage } from '../core/s3.ts';
import { errorMessage } from '../core/errors.ts';

/** A report line's outcome columns (the manifest's own columns come from the manifest). */
export interface ReportOutcome {
  status: string;
  request_id: string;
  attempts: string;
  images: string;
  seed: string;
  error: string;
  /** The error's type (fal's error_type, or ours) and its category (falErrors.ts); '' for a completed row. */
  error_type: string;
  error_category: string;
  /** What preflight read of the face; '' when it looked at none. */
  face_width: string;
  face_height: string;
  face_sha256: string;
}

/** The outcome of a row as its metadata object tells it (RowMeta's fields the report shows). */
export function outcomeOf(meta: {
  status: string;
  request_id: string | null;
  attempts: number;
  images: { key: string }[];
  seed: string | null;
  error: string | null;
  error_type?: string | null;
  error_category?: string | null;
  face_width?: number | null;
  face_height?: number | null;
  face_sha256?: string | null;
}): ReportOutcome {
  return {
    status: meta.status,
    request_id: meta.request_id ?? '',
    attempts: String(meta.attempts),
    images: meta.images.map((im) => im.key).join('|'),
    seed: meta.seed === null ? '' : String(meta.seed),
    error: meta.error ?? '',
    error_type: meta.error_type ?? '',
    error_category: meta.error_category ?? '',
    face_width: meta.face_width == null ? '' : String(meta.face_width),
    face_height: meta.face_height == null ? '' : String(meta.face_height),
    face_sha256: meta.face_sha256 ?? '',
  };
}

/**
 * A rejected row's report line, never submitted: rejected by the manifest's own bytes (type `rejected`),
 * or by preflight's look at its face (`face_unreachable`, `face_not_image`, `face_too_small`, `face_too_large`).
 */
export function rejectedOutcome(reason: string, errorType = 'rejected'): ReportOutcome {
  return { status: 'rejected', request_id: '', attempts: '', images: '', seed: '', error: reason, error_type: errorType, error_category: 'input', face_width: '', face_height: '', face_sha256: '' };
}

/** A rejected row of a producer's batch: its line, why, and the error type when not the manifest's `rejected`. */
export interface RejectedLine {
  line: number;
  reason: string;
  errorType?: string;
}

/**
 * The report lines of a batch of rejected rows, written by the producer before it counts them
 * (admitBatch.lua), so Redis holds nothing per rejected row. Gzipped: a manifest of a million rows
 * rejected for the same reason is a small object. Named by its first line, or `partLine` (the first
 * line of the producer's batch, when which rows are rejected may change between tries: preflight), so
 * a producer that died before counting the batch writes the same object again when it replays it. A
 * failure throws (the produce job is tried again): unlike a worker's part, no metadata object stands
 * behind these lines.
 */
export async function writeRejectedPart(ctx: Context, runId: string, rows: RejectedLine[], partLine = rows[0]?.line): Promise<void> {
  if (!rows.length || partLine === undefined) return;
  const body = rows.map((r) => JSON.stringify({ line: r.line, ...rejectedOutcome(r.reason, r.errorType) })).join('\n');
  await ctx.storage.putObject(runLayout(ctx.cfg.S3_PREFIX, runId).rejectedPart(partLine), gzipSync(`${body}\n`), 'application/gzip');
}

/** A batch is written at this many lines, or this long after its first line, whichever comes first. */
const PART_LINES = 500;
const PART_MAX_MS = 2000;

interface Pending {
  lines: Map<number, ReportOutcome>;
  timer?: NodeJS.Timeout;
}

interface Gathering {
  ctx: Context;
  runs: Map<string, Pending>;
  /** Batches on their way to S3, per run: a finalize waits for them so it finds them. */
  writing: Map<string, Set<Promise<void>>>;
}

/** This process's batches being gathered, per S3 client (one per process context) and run. */
const gathering = new WeakMap<Storage, Gathering>();

/** Adds a finished row's outcome to this process's batch for its run (written later, or by flushReportParts). */
export function addReportLine(ctx: Context, runId: string, line: number, outcome: ReportOutcome): void {
  let mine = gathering.get(ctx.storage);
  if (!mine) gathering.set(ctx.storage, (mine = { ctx, runs: new Map(), writing: new Map() }));
  const g = mine;
  let pending = g.runs.get(runId);
  if (!pending) g.runs.set(runId, (pending = { lines: new Map() }));
  pending.lines.set(line, outcome);
  if (pending.lines.size >= PART_LINES) void startWrite(g, runId);
  else if (!pending.timer) {
    pending.timer = setTimeout(() => void startWrite(g, runId), PART_MAX_MS);
    pending.timer.unref();
  }
}

/** Writes the run's gathered lines; resolves when they are written (or given up on: never rejects). */
function startWrite(g: Gathering, runId: string): Promise<void> {
  const write = writePart(g.ctx, g.runs, runId);
  let set = g.writing.get(runId);
  if (!set) g.writing.set(runId, (set = new Set()));
  set.add(write);
  void write.finally(() => {
    set.delete(write);
    if (!set.size && g.writing.get(runId) === set) g.writing.delete(runId);
  });
  return write;
}

/** Writes this process's gathered lines (of one run, or of every run) now: before a finalize, at shutdown. */
export async function flushReportParts(ctx: Context, runId?: string): Promise<void> {
  const g = gathering.get(ctx.storage);
  if (!g) return;
  const runs = runId === undefined ? [...g.runs.keys()] : [runId];
  await Promise.all(runs.map((r) => startWrite(g, r)));
  // Batches a timer started earlier, still on their way: the finalize that follows must find them.
  await Promise.all(runs.flatMap((r) => [...(g.writing.get(r) ?? [])]));
}

async function writePart(ctx: Context, runs: Map<string, Pending>, runId: string): Promise<void> {
  const pending = runs.get(runId);
  if (!pending) return;
  runs.delete(runId);
  clearTimeout(pending.timer);
  const lines = [...pending.lines].sort((a, b) => a[0] - b[0]);
  if (!lines.length) return;
  const body = lines.map(([line, o]) => JSON.stringify({ line, ...o })).join('\n');
  const key = runLayout(ctx.cfg.S3_PREFIX, runId).reportPart(lines[0]![0], randomUUID());
  try {
    // A run whose report is written needs no more parts (they would outlive their removal).
    if (await ctx.rows.runField(runId, 'finishedAt')) return;
    await ctx.storage.putObject(key, `${body}\n`, 'application/x-ndjson').catch((e: unknown) => Promise.reject(asS3Failure(e)));
  } catch (err) {
    // The report reads these rows' metadata instead. S3 or Redis down: that outage is the one line said.
    const down = outageOf(err);
    if (down) ctx.dependencies.down(down, err instanceof DependencyError ? err.cause : err);
    ctx.logger[down ? 'debug' : 'warn']({ runId, err: errorMessage(err) }, 'a batch of report lines could not be written; the report reads those rows from their metadata');
  }
}

/**
 * The outcomes of a run's parts, read in manifest-line order: `take(line)` answers a line's outcome
 * once every part that starts at or before it is loaded. Parts are named by their first line, so the
 * lines held in memory are those of parts that started before the current line (about a run window).
 * A part is checked against the rows, not trusted, where a Redis rollback can have made it wrong: a
 * line found in two parts (its row ended twice: Redis forgot the first ending) and the lines of parts
 * written within `ROLLBACK_SUSPECT_MS` before a Redis restart the run saw (`restarts`) answer nothing,
 * so the report reads that row's metadata, which its last ending wrote.
 */
export async function partsReader(
  ctx: Context,
  runId: string,
  restarts: number[] = [],
): Promise<{ take(line: number): Promise<ReportOutcome | undefined>; checked(): number }> {
  const layout = runLayout(ctx.cfg.S3_PREFIX, runId);
  const parts: { first: number; key: string; suspect: boolean }[] = [];
  const suspect = (at: number) => restarts.some((t) => at >= t - ROLLBACK_SUSPECT_MS && at <= t + ROLLBACK_SUSPECT_AFTER_MS);
  for await (const o of ctx.storage.list(layout.reportParts)) {
    const first = Number(/\/(\d+)-[^/]*$/.exec(o.key)?.[1]);
    if (Number.isFinite(first)) parts.push({ first, key: o.key, suspect: suspect(o.lastModified) });
  }
  parts.sort((a, b) => a.first - b.first);
  /** null: the line is to be read from its row's metadata. */
  const held = new Map<number, ReportOutcome | null>();
  let next = 0;
  let checked = 0;
  return {
    async take(line: number) {
      while (next < parts.length && parts[next]!.first <= line) {
        const part = parts[next++]!;
        const text = part.key.endsWith('.gz') ? gunzipSync((await ctx.storage.getBytes(part.key)).bytes).toString('utf8') : await ctx.storage.getText(part.key);
        for (const l of (text ?? '').split('\n')) {
          const parsed = parsedLine(l);
          if (!parsed) continue;
          // A rejected line follows from the manifest's bytes alone: no Redis rollback can make it wrong,
          // and a replayed batch writes it again alike.
          if (parsed.outcome.status === 'rejected') held.set(parsed.line, parsed.outcome);
          else held.set(parsed.line, part.suspect || held.has(parsed.line) ? null : parsed.outcome);
        }
      }
      const o = held.get(line);
      held.delete(line);
      if (o === null) checked++;
      return o ?? undefined;
    },
    checked: () => checked,
  };
}

/** Parts written this long before a Redis restart may hold outcomes the restart took back. */
const ROLLBACK_SUSPECT_MS = 60_000;
/** …and this long after it was seen (clocks of S3 and the workers differ a little). */
const ROLLBACK_SUSPECT_AFTER_MS = 5_000;

/** A part's line; anything unreadable is skipped (the row's metadata is read instead). */
function parsedLine(text: string): { line: number; outcome: ReportOutcome } | undefined {
  if (!text) return undefined;
  try {
    const { line, ...o } = JSON.parse(text) as ReportOutcome & { line: number };
    const cells = [o.status, o.request_id, o.attempts, o.images, o.seed, o.error];
    if (!Number.isInteger(line) || cells.some((c) => typeof c !== 'string')) return undefined;
    // error_type/error_category and the face's columns: parts written before they existed have none.
    const str = (v: unknown) => (typeof v === 'string' ? v : '');
    const kind = { error_type: str(o.error_type), error_category: str(o.error_category), face_width: str(o.face_width), face_height: str(o.face_height), face_sha256: str(o.face_sha256) };
    return { line, outcome: { status: o.status, request_id: o.request_id, attempts: o.attempts, images: o.images, seed: o.seed, error: o.error, ...kind } };
  } catch {
    return undefined;
  }
}

/** Removes a run's parts once its report is written. */
export async function removeReportParts(ctx: Context, runId: string): Promise<void> {
  await ctx.storage.deletePrefix(runLayout(ctx.cfg.S3_PREFIX, runId).reportParts);
}
