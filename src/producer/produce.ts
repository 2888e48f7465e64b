// The producer: validates the whole manifest, copies it to S3, then streams its rows into the submit
// queue in batches through a bounded window of rows in flight. Everything it does is resumable:
// running the same manifest again continues the same run from its cursor and never re-submits a row.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { basename, dirname, extname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Context } from '../core/context.ts';
import { runLayout } from '../core/layout.ts';
import { jobIds, submitJobOptions, type SubmitJob } from '../core/queues.ts';
import { enqueueFinalize } from '../worker/flush.ts';
import { InputsDigest, ManifestError, isRejected, readManifest, readOptionsFor, type ReadManifestOptions, type ValidRow } from '../manifest/index.ts';

export interface ProduceOptions {
  runId?: string;
  /** Rows enqueued per BullMQ addBulk call. */
  batchSize?: number;
  onProgress?: (p: { runId: string; read: number; queued: number; rejected: number; waiting: boolean }) => void;
}

export interface ProduceResult {
  runId: string;
  /** True when the run already existed and was continued. */
  resumed: boolean;
  total: number;
}

const RUN_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const WINDOW_POLL_MS = 200;
/** Local faces uploaded to S3 at once. */
const UPLOAD_CONCURRENCY = 16;

/**
 * Reads the manifest once: checks it is a usable CSV (throws ManifestError), hashes its bytes and
 * what its rows point at (the content of its local faces; undefined when it names none).
 */
export async function inspectManifest(path: string, opts: ReadManifestOptions = { baseDir: dirname(path) }): Promise<{ sha256: string; inputsSha256?: string; rows: number }> {
  const hash = createHash('sha256');
  const inputs = new InputsDigest();
  const stream = createReadStream(path);
  stream.on('data', (c) => hash.update(c));
  let rows = 0;
  for await (const row of readManifest(stream, opts)) {
    rows++;
    await inputs.add(row);
  }
  return { sha256: hash.digest('hex'), inputsSha256: inputs.digest(), rows };
}

/**
 * A run id a person can read, that changes whenever the manifest's bytes, the files its rows point at
 * or the endpoint change: the same manifest in the same place resumes, the same CSV in a folder with
 * other faces is another run.
 */
export function deriveRunId(manifestPath: string, sha256: string, endpoint: string, inputsSha256?: string): string {
  const slug = basename(manifestPath, extname(manifestPath)).replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+|-+$/g, '').slice(0, 48) || 'run';
  const h = createHash('sha256').update(`${sha256}\n${endpoint}${inputsSha256 ? `\n${inputsSha256}` : ''}`).digest('hex').slice(0, 12);
  return `${slug}-${h}`;
}

export async function produceRun(ctx: Context, manifestPath: string, opts: ProduceOptions = {}): Promise<ProduceResult> {
  const path = resolve(manifestPath);
  const info = await stat(path).catch(() => undefined);
  if (!info?.isFile()) throw new ManifestError(`manifest ${manifestPath} does not exist or is not a file`);
  const baseDir = dirname(path);
  const readOptions = readOptionsFor(ctx.cfg, baseDir);
  const { sha256, inputsSha256 } = await inspectManifest(path, readOptions);
  const runId = opts.runId ?? deriveRunId(path, sha256, ctx.cfg.FAL_ENDPOINT, inputsSha256);
  if (!RUN_ID.test(runId)) throw new ManifestError(`run id ${JSON.stringify(runId)} must be 1-128 characters of A-Z a-z 0-9 . _ -`);
  const layout = runLayout(ctx.cfg.S3_PREFIX, runId);
  // Summaries and logs name the manifest by file name and hash, never by the producer's paths.
  const manifest = basename(path);

  let run = await ctx.rows.getRun(runId);
  const resumed = run !== undefined;
  if (run && run.options.sha256 !== sha256) {
    throw new ManifestError(`run ${runId} was started from a different manifest (sha256 ${String(run.options.sha256).slice(0, 12)}…); use another --run-id`);
  }
  if (run && run.options.inputsSha256 !== inputsSha256) {
    throw new ManifestError(`run ${runId} was started from the same manifest pointing at other local faces (another folder, or changed files); use another --run-id`);
  }
  if (!run) {
    await ctx.storage.ensureBucket();
    await ctx.storage.upload(layout.manifest, createReadStream(path), 'text/csv');
    await ctx.rows.createRun({ runId, manifest, manifestKey: layout.manifest, options: { sha256, inputsSha256, endpoint: ctx.cfg.FAL_ENDPOINT, baseDir } });
    run = (await ctx.rows.getRun(runId))!;
    ctx.logger.info({ runId, manifest, sha256 }, 'run created');
  } else {
    ctx.logger.info({ runId, cursor: run.cursor, producerDone: run.producerDone }, 'resuming run');
  }

  const cursor = run.cursor;
  const window = ctx.cfg.RUN_WINDOW;
  const batchSize = Math.max(1, Math.min(opts.batchSize ?? 500, window));
  let total = 0;
  let queued = 0;
  let rejectedCount = 0;
  let batch: ValidRow[] = [];
  let rejected: { line: number; reason: string }[] = [];
  let lastLine = cursor;

  const flushBatch = async () => {
    if (!batch.length && !rejected.length) return;
    while ((await ctx.rows.inFlight(runId)) + batch.length > window) {
      opts.onProgress?.({ runId, read: total, queued, rejected: rejectedCount, waiting: true });
      await sleep(WINDOW_POLL_MS);
    }
    const jobs: SubmitJob[] = [];
    for (let i = 0; i < batch.length; i += UPLOAD_CONCURRENCY) {
      jobs.push(...(await Promise.all(batch.slice(i, i + UPLOAD_CONCURRENCY).map((row) => toSubmitJob(ctx, runId, row, layout)))));
    }
    // Jobs first, then the cursor: a crash in between replays the batch, and the job ids absorb it.
    await ctx.queues.submit.addBulk(
      jobs.map((data) => ({ name: 'submit', data, opts: { jobId: jobIds.submit(runId, data.key), ...submitJobOptions(ctx.cfg.SUBMIT_MAX_TRIES) } })),
    );
    await ctx.rows.admitBatch(runId, lastLine, jobs.length, rejected);
    queued += jobs.length;
    rejectedCount += rejected.length;
    batch = [];
    rejected = [];
    opts.onProgress?.({ runId, read: total, queued, rejected: rejectedCount, waiting: false });
  };

  if (!run.producerDone) {
    for await (const row of readManifest(createReadStream(path), readOptions)) {
      total++;
      if (row.line <= cursor) continue;
      lastLine = row.line;
      if (isRejected(row)) rejected.push({ line: row.line, reason: `${row.rejected.column}: ${row.rejected.reason}` });
      else batch.push(row);
      if (batch.length + rejected.length >= batchSize) await flushBatch();
    }
    await flushBatch();
  } else {
    total = run.total ?? 0;
  }
  if (await ctx.rows.finishProducing(runId, total)) await enqueueFinalize(ctx, runId);
  return { runId, resumed, total };
}

async function toSubmitJob(ctx: Context, runId: string, row: ValidRow, layout: ReturnType<typeof runLayout>): Promise<SubmitJob> {
  let faceObjectKey: string | undefined;
  if (row.faceKind === 'local' && row.localPath) {
    faceObjectKey = layout.input(row.key, extname(row.localPath).toLowerCase());
    await ctx.storage.upload(faceObjectKey, createReadStream(row.localPath), contentTypeOf(row.localPath));
  }
  return {
    runId,
    key: row.key,
    line: row.line,
    row: { id: row.id, faceUrl: row.faceUrl, faceKind: row.faceKind, faceObjectKey, input: row.input as Record<string, unknown>, extra: row.extra },
  };
}

function contentTypeOf(path: string): string {
  const ext = extname(path).toLowerCase();
  return ext === '.png' ? 'image/png' : ext === '.jpg' || ext === '.jpeg' ? 'image/jpeg' : ext === '.webp' ? 'image/webp' : 'application/octet-stream';
}
