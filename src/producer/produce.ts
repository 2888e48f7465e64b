// Producing a run. startRun (wherever the manifest is named: the CLI, the library) checks the manifest,
// copies it — and, for a local file, its local faces — to S3, records the run with its policy and
// enqueues a `produce` job. Any worker then runs produceRows: it streams the manifest copy from S3 into
// the submit queue in batches through a bounded window of rows in flight, from the run's resume
// cursor, so a killed producer is continued by another worker without re-submitting a row.
import { createReadStream } from 'node:fs';
import { basename, extname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Context } from '../core/context.ts';
import { estimateRow } from '../core/cost.ts';
import { runLayout } from '../core/layout.ts';
import { enqueueFinalize, enqueueProduce, jobIds, submitJobOptions, type SubmitJob } from '../core/queues.ts';
import { lineSelected, type RunRecord } from '../core/rowState.ts';
import { runPolicyFrom, toMicros, type RunPolicy } from '../core/runPolicy.ts';
import {
  FACE_COLUMNS,
  ManifestError,
  decodeDataFace,
  faceRuleFor,
  isRejected,
  readManifest,
  readOptionsFor,
  s3FacePolicy,
  storedFaceRule,
  type FaceRule,
  type ManifestRow,
  type ValidRow,
} from '../manifest/index.ts';
import { manifestSource, type ManifestSource } from '../manifest/source.ts';
import { finishedSummary } from '../outputs/summary.ts';
import { writeRejectedPart, type RejectedLine } from '../outputs/reportParts.ts';
import { deriveRunId, inspectManifest } from './inspect.ts';
import { faceSourceOf, lookAtFaces, preflightSettings, type FaceLook, type PreflightSettings } from './preflight.ts';

export interface StartRunOptions {
  runId?: string;
  /** Stop submitting once the estimated cost of submitted work would pass this (the run's currency). */
  maxCost?: number;
  /** Make the run of only these manifest lines (a retry), with its faces where `facesRunId` uploaded them. */
  lines?: number[];
  facesRunId?: string;
  /** The faces the run may read from S3, when not the rule of its manifest and this process's config (a retry keeps its original's). */
  faces?: FaceRule;
  /** The run's policy, when not the one this process's config gives (a retry keeps its original's). */
  policy?: RunPolicy;
  /**
   * Produce the run here and now, returning once every row is queued (waiting on the window), instead
   * of leaving it to a worker's produce job. A rerun without it hands the run to the workers.
   */
  inline?: boolean;
  /** Extra fields kept in the run's options (e.g. the run this one retries). */
  extra?: Record<string, unknown>;
}

export interface StartedRun {
  runId: string;
  /** True when the run already existed and was continued. */
  resumed: boolean;
  /** Rows in the manifest (or in the selection of a retry). */
  total: number;
  estimatedCost: number;
  currency: string;
}

const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export function checkRunId(runId: string): void {
  if (!RUN_ID.test(runId)) throw new ManifestError(`run id ${JSON.stringify(runId)} must be 1-128 characters of A-Z a-z 0-9 . _ -`);
}

/** Records a run and enqueues its producer; returns as soon as the run is recorded. */
export async function startRun(ctx: Context, source: string | ManifestSource, opts: StartRunOptions = {}): Promise<StartedRun> {
  const src = typeof source === 'string' ? manifestSource(source, ctx.storage) : source;
  const selected = opts.lines ? new Set(opts.lines) : undefined;
  // A retry's local faces were checked and uploaded by the run it retries, maybe on another machine.
  const checkedLocalFaces = opts.facesRunId ? await refusedLocalFaces(ctx, opts.facesRunId) : undefined;
  // Decided once, here, and stored with the run: every later reader of its faces applies this rule.
  const faces = opts.faces ?? faceRuleFor(ctx.cfg, src.kind === 's3' ? src.url : undefined);
  const inspection = await inspectManifest(src, { read: { ...readOptionsFor(ctx.cfg, src.baseDir, faces), checkedLocalFaces }, lines: selected });
  const runId = opts.runId ?? deriveRunId(src.name, inspection.sha256, ctx.cfg.FAL_ENDPOINT, inspection.inputsSha256);
  checkRunId(runId);
  const policy = opts.policy ?? runPolicyFrom(ctx.cfg, { maxCost: opts.maxCost });
  const estimatedCost = inspection.megapixels * policy.pricePerMegapixel;

  const existing = await ctx.rows.getRun(runId);
  if (existing) {
    if (existing.options.sha256 !== inspection.sha256) {
      throw new ManifestError(`run ${runId} was started from a different manifest (sha256 ${String(existing.options.sha256).slice(0, 12)}…); use another --run-id`);
    }
    if (existing.options.inputsSha256 !== inspection.inputsSha256) {
      throw new ManifestError(`run ${runId} was started from the same manifest pointing at other local faces (another folder, or changed files); use another --run-id`);
    }
    ctx.logger.info({ runId, cursor: existing.cursor, producerDone: existing.producerDone }, 'resuming run');
    if (opts.inline) await produceRows(ctx, runId);
    else if (!existing.producerDone) {
      if (existing.options.inline) await ctx.rows.setRunOptions(runId, { ...existing.options, inline: false });
      await enqueueProduce(ctx, runId);
    }
    return { runId, resumed: true, total: existing.total ?? inspection.rows, estimatedCost: Number(existing.options.estimatedCost ?? estimatedCost), currency: existing.policy.currency };
  }

  // A run that finished and whose Redis keys expired (RUN_RETENTION) is still that run: never made again.
  const finished = await finishedSummary(ctx, runId);
  if (finished) {
    if (finished.manifestSha256 !== inspection.sha256) {
      throw new ManifestError(`run ${runId} was made of a different manifest (sha256 ${String(finished.manifestSha256).slice(0, 12)}…); use another --run-id`);
    }
    return { runId, resumed: true, total: finished.total, estimatedCost: finished.estimatedCost, currency: finished.currency };
  }

  const layout = runLayout(ctx.cfg.S3_PREFIX, runId);
  await ctx.storage.ensureBucket();
  // The copy is what workers read and what the report is built from: the source may change or be
  // on another machine.
  await ctx.storage.upload(layout.manifest, await src.open(), 'text/csv');
  const facesRunId = opts.facesRunId ?? runId;
  const localFaces = src.kind === 'local' && !opts.facesRunId ? await uploadLocalFaces(ctx, src, runId, faces, selected) : 0;
  if (selected) await ctx.rows.selectLines(runId, [...selected]);
  const created = await ctx.rows.createRun({
    runId,
    // Summaries and logs name a local manifest by file name (and hash), never by the starter's paths.
    manifest: src.kind === 'local' ? basename(src.url) : src.url,
    manifestKey: layout.manifest,
    policy,
    options: {
      sha256: inspection.sha256,
      inputsSha256: inspection.inputsSha256,
      baseDir: src.baseDir,
      faces,
      facesRunId,
      localFaces: localFaces > 0 || Boolean(opts.facesRunId),
      rows: inspection.rows,
      estimatedCost,
      selected: Boolean(selected),
      inline: Boolean(opts.inline),
      // Frozen on the run, like its policy: every producer of it looks at faces alike.
      preflight: ctx.cfg.PREFLIGHT === 'on' ? { minPx: ctx.cfg.MIN_FACE_PX, maxMegapixels: ctx.cfg.MAX_FACE_MEGAPIXELS, maxBytes: ctx.cfg.MAX_FACE_BYTES } : false,
      ...opts.extra,
    },
  });
  if (created) ctx.logger.info({ runId, milestone: 'started', manifest: src.name, sha256: inspection.sha256, rows: inspection.rows, estimatedCost }, `run ${runId} started`);
  if (opts.inline) await produceRows(ctx, runId);
  else await enqueueProduce(ctx, runId);
  return { runId, resumed: !created, total: inspection.rows, estimatedCost, currency: policy.currency };
}

async function refusedLocalFaces(ctx: Context, facesRunId: string): Promise<Map<string, string>> {
  const refused = await ctx.storage.getJson<Record<string, string>>(runLayout(ctx.cfg.S3_PREFIX, facesRunId).localFaces);
  return new Map(Object.entries(refused ?? {}));
}

/** startRun, produced here: returns once every row is queued (the way the producer worked before it was a job). */
export function produceRun(ctx: Context, source: string | ManifestSource, opts: StartRunOptions = {}): Promise<StartedRun> {
  return startRun(ctx, source, { ...opts, inline: true });
}

/**
 * Rejected rows gathered before their report part is written and they are counted. Larger than a batch
 * of rows to enqueue: they wait on no window and cost one S3 object and one Redis call per part, so a
 * manifest of a million rejected rows is read in a few dozen steps.
 */
const REJECTED_PART_ROWS = 20_000;

/**
 * Uploads every local face the manifest names (where the files are: this machine), and records the
 * local faces it refused, so a worker on another machine reads the rows the same way.
 */
async function uploadLocalFaces(ctx: Context, src: ManifestSource, runId: string, faces: FaceRule, selected?: Set<number>): Promise<number> {
  const layout = runLayout(ctx.cfg.S3_PREFIX, runId);
  const refused: Record<string, string> = {};
  let uploads: Promise<void>[] = [];
  let n = 0;
  for await (const row of readManifest(await src.open(), readOptionsFor(ctx.cfg, src.baseDir, faces))) {
    if (selected && !selected.has(row.line)) continue;
    if (isRejected(row)) {
      if ((FACE_COLUMNS as readonly string[]).includes(row.rejected.column)) refused[row.faceUrl] = row.rejected.reason;
      continue;
    }
    if (row.faceKind !== 'local' || !row.localPath) continue;
    n++;
    uploads.push(ctx.storage.upload(layout.input(row.key, extname(row.localPath).toLowerCase()), createReadStream(row.localPath), contentTypeOf(row.localPath)));
    if (uploads.length >= ctx.policy.produce.uploadConcurrency) {
      await Promise.all(uploads);
      uploads = [];
    }
  }
  await Promise.all(uploads);
  if (n || Object.keys(refused).length) await ctx.storage.putJson(layout.localFaces, refused);
  return n || Object.keys(refused).length;
}

/** Set on close: a producer stops at its next step and its job is picked up again (here or elsewhere). */
export class ProducerInterrupted extends Error {
  override name = 'ProducerInterrupted';
}

/**
 * The produce job: streams the run's manifest copy through the window from the resume cursor. Rows read
 * after the run was canceled or stopped are admitted as canceled, never enqueued.
 */
export async function produceRows(ctx: Context, runId: string, signal?: AbortSignal): Promise<string> {
  let run = await ctx.rows.getRun(runId);
  if (!run) return 'norun';
  if (run.producerDone) {
    if (await ctx.rows.finishProducing(runId, run.total ?? 0)) await enqueueFinalize(ctx, runId);
    return 'done';
  }
  const layout = runLayout(ctx.cfg.S3_PREFIX, runId);
  const facesLayout = runLayout(ctx.cfg.S3_PREFIX, String(run.options.facesRunId ?? runId));
  const checkedLocalFaces = run.options.localFaces ? await refusedLocalFaces(ctx, String(run.options.facesRunId ?? runId)) : new Map<string, string>();
  const selection = run.options.selected ? await ctx.rows.selectedLines(runId) : undefined;
  const isSelected = (line: number) => !selection || lineSelected(selection, line);
  const window = ctx.cfg.RUN_WINDOW;
  const batchSize = Math.max(1, Math.min(ctx.policy.produce.batchSize, window));
  const priceMicros = toMicros(run.policy.pricePerMegapixel);
  const cursor = run.cursor;

  const preflight = runPreflight(ctx, run);

  let total = 0;
  let batch: ValidRow[] = [];
  let rejected: RejectedLine[] = [];
  let lastLine = cursor;
  const open = (r: RunRecord | undefined) => r?.state === 'running';

  const flushBatch = async () => {
    if (!batch.length && !rejected.length) return;
    while (open(run) && (await ctx.rows.inFlight(runId)) + batch.length > window) {
      if (signal?.aborted) throw new ProducerInterrupted(`producer of ${runId} interrupted`);
      await sleep(ctx.policy.produce.windowPollMs);
      run = await ctx.rows.getRun(runId);
    }
    if (signal?.aborted) throw new ProducerInterrupted(`producer of ${runId} interrupted`);
    run = await ctx.rows.getRun(runId);
    // The batch's first line names its rejected part when preflight decides some of it: a replay may decide otherwise.
    const partLine = Math.min(batch[0]?.line ?? Infinity, rejected[0]?.line ?? Infinity);
    let faces = new Map<string, FaceLook>();
    if (preflight && open(run) && batch.length) {
      const looked = await preflightBatch(ctx, runId, preflight, batch, facesLayout, signal).catch((err: unknown) => {
        throw signal?.aborted ? new ProducerInterrupted(`producer of ${runId} interrupted`) : err;
      });
      faces = looked.faces;
      batch = looked.passed;
      rejected = [...rejected, ...looked.refused].sort((a, b) => a.line - b.line);
    }
    // Rejected rows' reasons go where finished rows' outcomes go (the report parts), before they are counted.
    await writeRejectedPart(ctx, runId, rejected, preflight ? partLine : undefined);
    if (!open(run)) {
      // Canceled or stopped: what was not enqueued is never submitted; it ends canceled now.
      const reason = `run ${run?.state ?? 'gone'} before this row was submitted: ${run?.stopReason ?? ''}`;
      await ctx.rows.admitBatch(runId, lastLine, 0, rejected.length, batch.map((r) => ({ line: r.line, ordinal: ordinalOf(r), reason })));
    } else {
      const dataFaces = await storeDataFaces(ctx, batch, layout);
      const jobs: SubmitJob[] = batch.map((row) => toSubmitJob(runId, row, facesLayout, priceMicros, dataFaces.get(row.key), faces.get(row.key)));
      // Jobs first, then the cursor: a crash in between replays the batch, and the job ids absorb it.
      await ctx.queues.submit.addBulk(
        jobs.map((data) => ({ name: 'submit', data, opts: { jobId: jobIds.submit(runId, data.key), ...submitJobOptions(ctx.policy) } })),
      );
      await ctx.rows.admitBatch(runId, lastLine, jobs.length, rejected.length);
    }
    batch = [];
    rejected = [];
  };

  const stream = await ctx.storage.getStream(layout.manifest);
  const readOptions = { ...readOptionsFor(ctx.cfg, run.options.baseDir as string | undefined, storedFaceRule(run.options)), checkedLocalFaces };
  for await (const row of readManifest(stream, readOptions)) {
    if (!isSelected(row.line)) continue;
    total++;
    if (row.line <= cursor) continue;
    lastLine = row.line;
    if (isRejected(row)) rejected.push({ line: row.line, reason: `${row.rejected.column}: ${row.rejected.reason}` });
    else batch.push(row);
    if (batch.length >= batchSize || rejected.length >= REJECTED_PART_ROWS) await flushBatch();
  }
  await flushBatch();
  ctx.logger.info({ runId, milestone: 'produced', total }, `run ${runId} produced: all ${total} rows read`);
  if (await ctx.rows.finishProducing(runId, total)) await enqueueFinalize(ctx, runId);
  return 'done';
}

/**
 * Stores the data: faces of a batch in S3 (row key → object key): the queued row names the object
 * instead of carrying the image, so a row's bytes in Redis stay small. A replayed batch rewrites them.
 */
async function storeDataFaces(ctx: Context, rows: ValidRow[], layout: ReturnType<typeof runLayout>): Promise<Map<string, { key: string; bytes: number }>> {
  const stored = new Map<string, { key: string; bytes: number }>();
  const faces = rows.filter((r) => r.faceKind === 'data');
  for (let i = 0; i < faces.length; i += ctx.policy.produce.uploadConcurrency) {
    await Promise.all(
      faces.slice(i, i + ctx.policy.produce.uploadConcurrency).map(async (row) => {
        const face = decodeDataFace(row.faceUrl);
        const key = layout.input(row.key, `.${face.ext}`);
        await ctx.storage.upload(key, face.bytes, face.contentType);
        stored.set(row.key, { key, bytes: face.bytes.length });
      }),
    );
  }
  return stored;
}

function toSubmitJob(
  runId: string,
  row: ManifestRow & ValidRow,
  faces: ReturnType<typeof runLayout>,
  priceMicros: number,
  dataFace?: { key: string; bytes: number },
  face?: FaceLook,
): SubmitJob {
  let faceObjectKey = row.faceKind === 'local' && row.localPath ? faces.input(row.key, extname(row.localPath).toLowerCase()) : undefined;
  let faceUrl = row.faceUrl;
  if (dataFace) {
    faceObjectKey = dataFace.key;
    faceUrl = `${row.faceUrl.slice(0, row.faceUrl.indexOf(','))},… (${dataFace.bytes} bytes, stored at ${dataFace.key})`;
  }
  return {
    runId,
    key: row.key,
    line: row.line,
    ordinal: ordinalOf(row),
    row: {
      id: row.id,
      faceUrl,
      faceKind: row.faceKind,
      faceObjectKey,
      input: row.input as Record<string, unknown>,
      extra: row.extra,
      ...(face ? { face: { width: face.width, height: face.height, bytes: face.bytes, sha256: face.sha256 } } : {}),
    },
    // What the spend guard counts when the row is claimed: without image_size, the face's own size.
    costMicros: estimateRow(row.input as Record<string, unknown>, face).megapixels * priceMicros,
  };
}

/** The run's preflight settings (its frozen limits, this worker's reach), or undefined when the run looks at no face. */
function runPreflight(ctx: Context, run: RunRecord): PreflightSettings | undefined {
  const frozen = run.options.preflight as { minPx: number; maxMegapixels: number; maxBytes: number } | false | undefined;
  if (!frozen) return undefined;
  return { ...preflightSettings(ctx.cfg, ctx.policy.preflight), minPx: frozen.minPx, maxMegapixels: frozen.maxMegapixels, maxBytes: frozen.maxBytes };
}

/**
 * Looks at the faces of a batch before any of it is queued: the rows whose face fails are rejected
 * (their reasons for the report), the others go on with what was read of their face.
 */
async function preflightBatch(
  ctx: Context,
  runId: string,
  settings: PreflightSettings,
  batch: ValidRow[],
  faces: ReturnType<typeof runLayout>,
  signal?: AbortSignal,
): Promise<{ passed: ValidRow[]; refused: RejectedLine[]; faces: Map<string, FaceLook> }> {
  const s3 = s3FacePolicy(ctx.cfg);
  // A local face is read where the run uploaded it: this worker may not have the starter's disk.
  const sources = batch.map((row) =>
    faceSourceOf(row, s3, row.faceKind === 'local' && row.localPath ? { bucket: ctx.storage.bucket, key: faces.input(row.key, extname(row.localPath).toLowerCase()) } : undefined),
  );
  const verdicts = await lookAtFaces(sources, settings, () => ctx.storage, undefined, signal);
  const passed: ValidRow[] = [];
  const refused: RejectedLine[] = [];
  const looks = new Map<string, FaceLook>();
  batch.forEach((row, i) => {
    const v = verdicts[i]!;
    if ('refused' in v) refused.push({ line: row.line, reason: `face_url: ${v.refused.reason}`, errorType: v.refused.errorType });
    else {
      passed.push(row);
      looks.set(row.key, v.face);
    }
  });
  if (refused.length) ctx.logger.info({ runId, refused: refused.length, rows: batch.length }, `preflight refused ${refused.length} of ${batch.length} faces`);
  return { passed, refused, faces: looks };
}

/** A row's done bit: its position among the manifest's data rows (readManifest sets it on every row). */
function ordinalOf(row: ManifestRow): number {
  if (row.ordinal === undefined) throw new Error(`row on line ${row.line} has no ordinal`);
  return row.ordinal;
}

function contentTypeOf(path: string): string {
  const ext = extname(path).toLowerCase();
  return ext === '.png' ? 'image/png' : ext === '.jpg' || ext === '.jpeg' ? 'image/jpeg' : ext === '.webp' ? 'image/webp' : 'application/octet-stream';
}
