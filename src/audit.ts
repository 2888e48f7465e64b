// Checks a finished run from S3 and Redis alone — not from any process's counters: every manifest
// row has exactly one outcome in report.csv, the report agrees with each row's metadata and with the
// image objects actually in S3, images hash to what the metadata says, and (given the emulator's
// books) fal never accepted a row more often than the attempts we recorded.
import { createHash } from 'node:crypto';
import { pipeline } from 'node:stream/promises';
import { parse } from 'csv-parse';
import type { Context } from './core/context.ts';
import { runLayout } from './core/layout.ts';
import { lineSelected } from './core/rowState.ts';
import { effectiveNumImages } from './core/modelInput.ts';
import { readManifest } from './manifest/index.ts';
import type { RowMeta } from './worker/flush.ts';

export interface AuditResult {
  rows: number;
  completed: number;
  failed: number;
  rejected: number;
  canceled: number;
  /** Manifest rows without exactly one final outcome. */
  lost: number;
  /** Rows with more than one outcome, or with image objects beyond their outcome. */
  duplicated: number;
  /** Rows fal accepted more often than the attempts we recorded for them. */
  extraSubmits: number;
  /**
   * Attempts whose submit got no answer and whose request fal never named to us (an attempt without
   * a request id): fal may have accepted, run and charged each, beside the attempt that replaced it.
   * With webhooks the lost answer's webhook names the attempt, so only an attempt whose webhook never
   * came counts; without webhooks (poll mode) every lost submit answer counts. Not a problem of the
   * run — it cannot be told from a submit fal never got — but never hidden either.
   */
  ambiguousSubmits: number;
  /**
   * fal requests of the run's rows, every attempt counted (a row fal failed without billing and that
   * was tried again counts each try); must equal the run's `submits`.
   */
  attempts: number;
  problems: string[];
}

interface ReportRecord {
  line: string;
  id: string;
  status: string;
  request_id: string;
  attempts: string;
  images: string;
}

const MAX_PROBLEMS = 50;

export async function auditRun(
  ctx: Context,
  runId: string,
  opts: { acceptedByRow?: Record<string, number>; verifyHashes?: boolean } = {},
): Promise<AuditResult> {
  const layout = runLayout(ctx.cfg.S3_PREFIX, runId);
  const res: AuditResult = {
    rows: 0,
    completed: 0,
    failed: 0,
    rejected: 0,
    canceled: 0,
    lost: 0,
    duplicated: 0,
    extraSubmits: 0,
    ambiguousSubmits: 0,
    attempts: 0,
    problems: [],
  };
  const problem = (p: string) => {
    if (res.problems.length < MAX_PROBLEMS) res.problems.push(p);
  };

  const report = new Map<number, ReportRecord>();
  const labelled = <T>(what: string, p: Promise<T>) => p.catch((err: Error) => Promise.reject(new Error(`${what}: ${err.name}: ${err.message}`)));
  await pipeline(await labelled(`GET ${layout.report}`, ctx.storage.getStream(layout.report)), parse({ columns: true, bom: true }), async (records: AsyncIterable<ReportRecord>) => {
    for await (const rec of records) {
      const line = Number(rec.line);
      if (report.has(line)) {
        res.duplicated++;
        problem(`line ${line} appears twice in report.csv`);
      }
      report.set(line, rec);
    }
  });

  // Every image object in the run, grouped by row key.
  const objects = new Map<string, Set<string>>();
  const imagesPrefix = `${layout.base}images/`;
  const listing = ctx.storage.list(imagesPrefix);
  for (;;) {
    const next = await labelled(`LIST ${imagesPrefix}`, listing.next());
    if (next.done) break;
    const o = next.value;
    const rowKey = o.key.slice(imagesPrefix.length).split('/')[0]!;
    if (!objects.has(rowKey)) objects.set(rowKey, new Set());
    objects.get(rowKey)!.add(o.key);
  }

  const seenKeys = new Set<string>();
  // A retry is made of some lines of its manifest only.
  const selection = (await ctx.rows.getRun(runId))?.options.selected ? await ctx.rows.selectedLines(runId) : undefined;
  for await (const row of readManifest(await labelled(`GET ${layout.manifest}`, ctx.storage.getStream(layout.manifest)), {})) {
    if (selection && !lineSelected(selection, row.line)) continue;
    res.rows++;
    // The row's objects are its own whatever the report says: never counted as a stranger's.
    const stored = objects.get(row.key) ?? new Set<string>();
    objects.delete(row.key);
    const rec = report.get(row.line);
    report.delete(row.line);
    if (!rec || !['completed', 'failed', 'rejected', 'canceled'].includes(rec.status)) {
      res.lost++;
      problem(`line ${row.line}: no final outcome in report.csv (${rec?.status ?? 'missing'})`);
      continue;
    }
    res[rec.status as 'completed']++;
    // Rejected rows, and rows canceled before they were ever enqueued, have no metadata and no images.
    const neverSubmitted = rec.status === 'rejected' || (rec.status === 'canceled' && (await ctx.rows.canceledReasons(runId, [row.line]))[0]);
    if (neverSubmitted) {
      if (stored.size) {
        res.duplicated++;
        problem(`line ${row.line}: ${rec.status} but has ${stored.size} image objects`);
      }
      if (opts.acceptedByRow?.[`${runId}/${row.key}`]) {
        res.extraSubmits++;
        problem(`line ${row.line}: ${rec.status} before submission, yet fal accepted it`);
      }
      continue;
    }
    if (seenKeys.has(row.key)) continue;
    seenKeys.add(row.key);
    const meta = await ctx.storage.getJson<RowMeta>(layout.meta(row.key)).catch((err: Error) => {
      problem(`line ${row.line}: metadata unreadable: ${err.name} ${err.message}`);
      return undefined;
    });
    if (!meta || meta.status !== rec.status) {
      res.lost++;
      problem(`line ${row.line}: metadata ${meta ? `says ${meta.status}` : 'missing'}, report says ${rec.status}`);
      continue;
    }
    const reportImages = rec.images ? rec.images.split('|') : [];
    const metaImages = meta.images.map((i) => i.key);
    if (rec.status === 'completed') {
      const expected = effectiveNumImages(meta.input);
      if (metaImages.length !== expected || reportImages.join('|') !== metaImages.join('|')) {
        res.lost++;
        problem(`line ${row.line}: expected ${expected} images, metadata lists ${metaImages.length}, report lists ${reportImages.length}`);
      }
      for (const k of metaImages) if (!stored.has(k)) problem(`line ${row.line}: ${k} is listed but not in S3`);
      if (metaImages.some((k) => !stored.has(k))) res.lost++;
      if (opts.verifyHashes) {
        for (const img of meta.images) {
          const digest = await sha256Of(ctx, img.key).catch((err: Error) => `unreadable: ${err.name} ${err.message}`);
          if (digest !== img.sha256) {
            res.lost++;
            problem(`line ${row.line}: ${img.key} does not match its sha256 (${digest})`);
          }
        }
      }
    }
    const extra = [...stored].filter((k) => !metaImages.includes(k));
    if (extra.length) {
      res.duplicated++;
      problem(`line ${row.line}: ${extra.length} image objects beyond its ${rec.status} outcome`);
    }
    const accepted = opts.acceptedByRow?.[`${runId}/${row.key}`] ?? 0;
    if (opts.acceptedByRow && accepted > meta.attempts) {
      res.extraSubmits++;
      problem(`line ${row.line}: fal accepted ${accepted} submissions, ${meta.attempts} attempts recorded`);
    }
    res.ambiguousSubmits += Math.max(0, meta.attempts - meta.request_ids.length);
    // A request kept beside an attempt whose record Redis lost (request_ids beyond attempts) was paid too.
    res.attempts += Math.max(meta.attempts, meta.request_ids.length);
    if (String(meta.attempts) !== rec.attempts || (meta.request_id ?? '') !== rec.request_id) {
      problem(`line ${row.line}: report and metadata disagree on attempts/request_id`);
    }
  }
  for (const line of report.keys()) {
    res.duplicated++;
    problem(`report.csv has line ${line}, which the manifest does not`);
  }
  for (const [key, set] of objects) {
    res.duplicated++;
    problem(`${set.size} image objects under ${key}, which is no row of the manifest`);
  }

  const run = await ctx.rows.getRun(runId);
  if (!run?.finishedAt) problem('run is not finished in Redis');
  else if (run.completed !== res.completed || run.failed !== res.failed || run.rejected !== res.rejected || run.canceled !== res.canceled) {
    problem(`Redis counters (${run.completed}/${run.failed}/${run.rejected}/${run.canceled}) differ from the report (${res.completed}/${res.failed}/${res.rejected}/${res.canceled})`);
  }
  // More attempts in the metadata than the run counted: a submission was never counted (cost, cap).
  if (run?.finishedAt && res.attempts > run.submits) problem(`the run counted ${run.submits} fal submissions, its rows' metadata ${res.attempts} attempts`);
  if ((await ctx.rows.activeRowKeys(runId)).length) problem('rows are still in flight in Redis');
  return res;
}

async function sha256Of(ctx: Context, key: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const c of await ctx.storage.getStream(key)) hash.update(c as Buffer);
  return hash.digest('hex');
}
