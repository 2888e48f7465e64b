// Result jobs (from a webhook or a poll): decide once what the result means for its row, then
// download every image into S3 under deterministic keys and complete the row. Any mix of webhook
// retries, duplicate deliveries and polls ends in one completion: the row state machine decides.
import { createHash } from 'node:crypto';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DelayedError, UnrecoverableError, type Job } from 'bullmq';
import type { Context } from '../core/context.ts';
import { DependencyError, asS3Failure, outageOf } from '../core/dependencies.ts';
import { DownloadError, errorMessage } from '../core/errors.ts';
import { classifyFalError, describeDetail } from '../core/fal.ts';
import { falSlots } from '../core/falSlots.ts';
import { runLayout } from '../core/layout.ts';
import { addSubmitJob, type ResultJob } from '../core/queues.ts';
import { dropStagedPayload, resultPayload } from '../core/resultJobs.ts';
import type { ResultVerdict, Row, RunRecord, StoredImage } from '../core/rowState.ts';
import { verdictOf, webhookErrorInfo, type FalErrorInfo } from '../core/falErrors.ts';
import { backoffDelay } from '../core/policy.ts';
import { openImage, type DownloadPolicy } from '../core/download.ts';
import { resubmitAfterFaceRefusal } from './falFaceRefusal.ts';
import { falKnowsRequest, isGoneResult, resubmitForgotten } from './falForgot.ts';
import { flushRow } from './flush.ts';
import { uploadWhileWriting } from './uploadWhileWriting.ts';
import { observeRunTime } from './poll.ts';

interface FalImage {
  url: string;
  content_type?: string;
  width?: number;
  height?: number;
}

export function downloadPolicy(ctx: Context): DownloadPolicy {
  return { allowedHosts: ctx.cfg.RESULT_HOSTS, maxBytes: ctx.cfg.MAX_IMAGE_BYTES, timeoutMs: ctx.cfg.DOWNLOAD_TIMEOUT_MS };
}

export function errorText(r: Pick<ResultJob, 'error' | 'payload'>): string {
  const detail = describeDetail(r.payload);
  return [r.error || 'fal reported an error', detail].filter(Boolean).join(': ');
}

export async function processResult(ctx: Context, job: Job<ResultJob>, token?: string): Promise<string> {
  let outcome: string;
  try {
    const r = { ...job.data, payload: await resultPayload(ctx, job.data).catch((err: unknown) => Promise.reject(asS3Failure(err))) };
    outcome = await placeAndStore(ctx, job, r);
  } catch (raw) {
    const err = outageOf(raw) ? await waitOutOutage(ctx, job, token, raw) : raw;
    // A staged payload lives as long as its job may run again (the reconciler retries failed ones).
    if (err instanceof UnrecoverableError) await dropStagedPayload(ctx, job.data);
    throw err;
  }
  await dropStagedPayload(ctx, job.data);
  return outcome;
}

/**
 * Redis, S3 or fal is down while a finished result is being stored: never the row's fault, so no try
 * is counted. Within STORE_RETRY_WINDOW of the result's arrival the job waits (moved back, its queue
 * paused by the outage) and tries again when the outage is over; after it, the job lets go and the row
 * stays `storing`: the reconciler re-drives it until its deadline (see reconcile.ts, storeDeadline).
 */
async function waitOutOutage(ctx: Context, job: Job<ResultJob>, token: string | undefined, raw: unknown): Promise<unknown> {
  const dep = outageOf(raw)!;
  if (!(raw instanceof DependencyError && raw.alreadySaid)) ctx.dependencies.down(dep, raw instanceof DependencyError ? raw.cause : raw);
  const err = raw instanceof DependencyError ? raw : new DependencyError(dep, raw);
  const now = Date.now();
  if (token && now - job.data.receivedAt < ctx.policy.results.retryWindowMs) {
    await job.moveToDelayed(now + ctx.policy.dependencies.recheckMs, token);
    throw new DelayedError();
  }
  job.discard();
  return err;
}

async function placeAndStore(ctx: Context, job: Job<ResultJob>, r: ResultJob): Promise<string> {
  const mapped = await ctx.rows.lookupRequest(r.requestId);
  const target = mapped ?? r.hint;
  if (!target) return unplaced(ctx, job, 'no row is known for this request');
  if (r.status === 'ERROR') {
    // Our copy of the face in fal's storage was gone (fal restarted, the upload expired): not the row's fault.
    const again = await resubmitAfterFaceRefusal(ctx, target, r.requestId, errorText(r));
    if (again) return again;
  }
  const hintAttempt = r.hint && r.hint.runId === target.runId && r.hint.key === target.key ? r.hint.attempt : undefined;
  const failure = r.status === 'ERROR' ? await judgeFailure(ctx, target.runId, r) : undefined;
  const { decision, row } = await ctx.rows.recordResultRow(target.runId, target.key, {
    requestId: r.requestId,
    hintAttempt,
    status: r.status,
    error: failure?.error,
    verdict: failure?.verdict,
  });
  if (decision === 'unknown') return unplaced(ctx, job, `row ${target.runId}/${target.key} has no attempt for this request yet`);
  // fal is done with the row's request: its place on fal's side is free for the next row.
  if (decision === 'store' || decision === 'failed' || decision === 'duplicate' || decision === 'retry') await falSlots(ctx).release(target.runId, target.key);
  if (decision === 'failed') await flushRow(ctx, target.runId, target.key);
  if (decision === 'retry') await queueNewAttempt(ctx, target.runId, target.key, failure!.error);
  if (decision !== 'store') return decision;

  if (!row || row.state !== 'storing' || row.storeRequestId !== r.requestId) return 'moved-on';
  // S3 is down (as this process saw it): the result is recorded, the row waits; only the probe tries S3.
  if (ctx.dependencies.isDown('s3')) throw new DependencyError('s3', 'waiting for S3 to come back');
  // A webhook's arrival tells how long fal took (poll mode learns it from fal's inference_time).
  if (r.source === 'webhook' && job.attemptsMade === 0 && row.submittedAt && row.requestId === r.requestId) {
    await observeRunTime(ctx, row.runId, r.receivedAt - row.submittedAt);
  }
  const tries = job.opts.attempts ?? 1;
  const lastTry = job.attemptsMade + 1 >= tries;
  // fal down as this try starts: its file host not answering is that outage, even when fal is back by
  // the time the failure is looked at (a refused download, then a status call that finds fal again).
  const falWasDown = ctx.dependencies.isDown('fal');
  try {
    const payload = await payloadOf(ctx, row, r);
    await storeImages(ctx, row, r.requestId, payload);
    ctx.metrics.observeStored({ submittedAt: row.submittedAt, receivedAt: r.receivedAt, payload });
    return 'completed';
  } catch (err) {
    if (outageOf(err)) throw err; // Redis, S3 or fal down: the job waits (processResult), no try counted
    if (err instanceof DownloadError && !err.permanent && err.status === undefined) {
      if (falWasDown) throw new DependencyError('fal', err, true);
      // No answer from the file's host (fal's): when fal itself is down too, this throws its outage and
      // the job waits it out without counting a try; when fal answers, the download alone is tried again.
      const endpoint = (await ctx.rows.getRun(row.runId))?.policy.endpoint || ctx.cfg.FAL_ENDPOINT;
      await falKnowsRequest(ctx, endpoint, r.requestId).catch((raw: unknown) => {
        if (outageOf(raw)) throw raw;
      });
    }
    if (isGoneResult(err)) {
      // Its files are gone: a fal that forgot the request (restarted) gets it again as a new attempt.
      const endpoint = (await ctx.rows.getRun(row.runId))?.policy.endpoint || ctx.cfg.FAL_ENDPOINT;
      if (!(await falKnowsRequest(ctx, endpoint, r.requestId))) {
        await removeImages(ctx, row);
        const outcome = await resubmitForgotten(ctx, row, r.requestId, errorMessage(err));
        if (outcome !== 'noop') return outcome;
      }
    }
    const permanent = err instanceof DownloadError && err.permanent;
    if (!permanent && !lastTry) throw err;
    const reason = permanent ? errorMessage(err) : `${errorMessage(err)} (tried ${tries} times, STORE_MAX_TRIES)`;
    ctx.logger.warn({ runId: row.runId, row: row.key, requestId: r.requestId, err: reason }, 'storing the result failed for good');
    await removeImages(ctx, row);
    const type = err instanceof DownloadError && err.errorType ? err.errorType : 'store_failed';
    if (await ctx.rows.finishRow(row.runId, row.key, 'failed', `storing the result failed: ${reason}`, ['storing'], r.requestId, { type, category: 'storage' })) {
      await flushRow(ctx, row.runId, row.key);
    }
    return 'failed';
  }
}

/**
 * The result's payload. A webhook whose payload was too large for it arrives with `payload: null`
 * (and a `payload_error`): the result is then fetched with queue.result. A failed fetch is thrown, so
 * BullMQ tries again (a 4xx for good, as a permanent download error).
 */
async function payloadOf(ctx: Context, row: Row, r: ResultJob): Promise<unknown> {
  if (r.payload !== null && r.payload !== undefined) return r.payload;
  const endpoint = (await ctx.rows.getRun(row.runId))?.policy.endpoint || ctx.cfg.FAL_ENDPOINT;
  try {
    return (await ctx.fal.queue.result(endpoint, { requestId: r.requestId })).data;
  } catch (raw) {
    const err = classifyFalError(raw);
    if (err.name === 'FalNotFoundError') {
      throw new DownloadError(`result expired: the webhook had no payload and fal no longer keeps the result (404): ${errorMessage(err)}`, true, 'result_expired');
    }
    if (err.name === 'FalRejectedError') {
      throw new DownloadError(`the webhook had no payload and queue.result failed: ${errorMessage(err)}`, true);
    }
    throw err;
  }
}

/**
 * What fal's failure means for the row (falErrors.ts): its type and category, whether a new attempt is
 * made (fal did not bill it and it may succeed) and whether its estimate leaves the run's cost. A
 * webhook carries no headers: a 504 it reports is looked up once with the result call, which says
 * whether it was our start timeout (X-Fal-Request-Timeout-Type: user).
 */
async function judgeFailure(ctx: Context, runId: string, r: ResultJob): Promise<{ error: string; verdict: ResultVerdict }> {
  const info = r.falError ?? webhookErrorInfo(r.error, r.payload);
  let run: Promise<RunRecord | undefined> | undefined;
  const policy = async () => (await (run ??= ctx.rows.getRun(runId)))?.policy;
  if (info.status === 504 && info.timeoutType === undefined && r.source === 'webhook') {
    try {
      await ctx.fal.queue.result((await policy())?.endpoint || ctx.cfg.FAL_ENDPOINT, { requestId: r.requestId });
    } catch (raw) {
      const timeoutType = (classifyFalError(raw) as { fal?: FalErrorInfo }).fal?.timeoutType;
      if (timeoutType) info.timeoutType = timeoutType;
    }
  }
  const v = verdictOf(info);
  let error = errorText(r);
  if (v.startTimeout) {
    const ms = (await policy())?.queueDeadlineMs ?? ctx.cfg.QUEUE_DEADLINE_MS;
    error = `timed out: fal did not start it within QUEUE_DEADLINE_MS (${ms} ms): ${error}`;
  }
  return { error, verdict: { type: v.type, category: v.category, retry: v.retry, refund: v.billed === 'no' } };
}

/** A row fal failed without billing, with attempts left: its next attempt, after the backoff. */
async function queueNewAttempt(ctx: Context, runId: string, key: string, error: string): Promise<void> {
  const row = await ctx.rows.getRow(runId, key);
  if (!row || row.state !== 'pending') return; // taken already (the reconciler re-drives a pending row without its job)
  const delayMs = backoffDelay(ctx.policy.submit.newAttemptBackoff, row.attempt);
  ctx.logger.debug({ runId, row: key, attempt: row.attempt, delayMs, err: error }, 'fal failed the request without billing it; a new attempt follows');
  await addSubmitJob(ctx, row, row.attempt, delayMs);
}

function unplaced(ctx: Context, job: Job<ResultJob>, why: string): string {
  // A result can only be unplaced for a moment (its submit is being recorded); after a few looks it is
  // a result we never asked for, and dropping it is right.
  if (job.attemptsMade + 1 < Math.min(ctx.policy.results.unknownRequestTries, job.opts.attempts ?? 1)) throw new Error(`${why}; will look again`);
  throw new UnrecoverableError(`${why}; dropped`);
}

async function storeImages(ctx: Context, row: Row, requestId: string, payload: unknown): Promise<void> {
  const out = (payload ?? {}) as { images?: FalImage[]; seed?: number | string; prompt?: string };
  if (!Array.isArray(out.images) || out.images.length === 0) throw new DownloadError('fal returned no images', true);
  const layout = runLayout(ctx.cfg.S3_PREFIX, row.runId);
  const policy = downloadPolicy(ctx);
  const stored: StoredImage[] = [];
  for (const [n, img] of out.images.entries()) {
    if (!img || typeof img.url !== 'string') throw new DownloadError(`image ${n} has no url`, true);
    const opened = await openImage(img.url, policy);
    // The extension and Content-Type come from the image's own first bytes, not from any claim.
    const key = layout.image(row.key, n, opened.format);
    const hash = createHash('sha256');
    let bytes = 0;
    const tap = new Transform({
      transform(chunk: Buffer, _e, cb) {
        hash.update(chunk);
        bytes += chunk.length;
        cb(null, chunk);
      },
    });
    const metadata = { 'run-id': row.runId, 'row-key': row.key, 'request-id': requestId, 'image-index': String(n) };
    // Any failure to write is our storage's, never the row's: it waits (see waitOutOutage).
    const upload = ctx.storage.upload(key, tap, opened.contentType, metadata).catch((err: unknown) => Promise.reject(new DependencyError('s3', err)));
    await uploadWhileWriting(tap, upload, pipeline(opened.body, tap));
    stored.push({ key, sourceUrl: img.url, contentType: opened.contentType, width: img.width, height: img.height, bytes, sha256: hash.digest('hex') });
  }
  const seed = out.seed === undefined ? '' : String(out.seed);
  const completed = await ctx.rows.completeRowRead(row.runId, row.key, requestId, stored, seed, out.prompt ?? '', row.requestIds);
  if (completed) await flushRow(ctx, row.runId, row.key, completed);
}

/**
 * A failed row keeps no partial images, so S3 agrees with the report. Cleaning up must not hide why
 * the row failed: when it fails, the row still fails with its own reason and the leftovers are logged.
 */
async function removeImages(ctx: Context, row: Row): Promise<void> {
  const prefix = runLayout(ctx.cfg.S3_PREFIX, row.runId).imagesOf(row.key);
  try {
    await ctx.storage.deletePrefix(prefix);
  } catch (err) {
    ctx.logger.error({ runId: row.runId, row: row.key, prefix, err: errorMessage(err) }, 'could not remove the partial images of a failed row');
  }
}
