// Submit jobs: claim the row (the attempt is recorded before fal is called), call
// fal.queue.submit with a webhook URL that names the row and carries a token only we can mint, record
// request_id -> row. Failures are sorted by what to do: try later (429/5xx), fail the row (422/4xx),
// pause (401/403), or wait and let the reconciler decide (the call may have reached fal).
import { DelayedError, type Job } from 'bullmq';
import { requireVar } from '../core/config.ts';
import type { Context } from '../core/context.ts';
import { FalAmbiguousError, FalAuthError, FalRejectedError, FalTransientError, errorMessage } from '../core/errors.ts';
import { classifyFalError } from '../core/fal.ts';
import { getPause, pauseSubmissions } from '../core/pause.ts';
import type { SubmitJob } from '../core/queues.ts';
import type { RowData } from '../core/rowState.ts';
import { parseS3Url } from '../core/s3.ts';
import { mintWebhookToken, TOKEN_PARAM } from '../core/webhookToken.ts';
import { s3FacePolicy, s3FaceRefusal } from '../manifest/index.ts';
import { flushRow } from './flush.ts';

/** Our webhook URL for one attempt of a row: its run/row/attempt, with a token only we can mint for them. */
export function webhookUrlFor(ctx: Context, runId: string, key: string, attempt: number): string {
  const secret = requireVar(ctx.cfg, 'WEBHOOK_SECRET', 'by the worker: it signs the webhook URLs given to fal');
  const token = mintWebhookToken(secret, { runId, key, attempt });
  const q = new URLSearchParams({ run: runId, row: key, attempt: String(attempt), [TOKEN_PARAM]: token });
  return `${ctx.cfg.webhookUrl}?${q}`;
}

/** The URL fal fetches the face from: s3:// faces and uploaded local and data: faces are presigned at submit time. */
export async function faceUrlForFal(ctx: Context, row: RowData): Promise<string> {
  const ttl = ctx.cfg.PRESIGN_EXPIRES_SECONDS;
  if (row.faceKind === 's3') {
    const { bucket, key } = parseS3Url(row.faceUrl);
    return ctx.storage.presign(key, ttl, bucket);
  }
  if (row.faceKind === 'local') {
    if (!row.faceObjectKey) throw new Error(`local face ${row.faceUrl} was not uploaded`);
    return ctx.storage.presign(row.faceObjectKey, ttl);
  }
  // A data: face was uploaded by the producer (rows queued before that carry the URI itself).
  if (row.faceKind === 'data' && row.faceObjectKey) return ctx.storage.presign(row.faceObjectKey, ttl);
  return row.faceUrl;
}

export async function processSubmit(ctx: Context, job: Job<SubmitJob>, token?: string): Promise<string> {
  const { runId, key, line, row } = job.data;
  if (await getPause(ctx)) return delay(ctx, job, token);
  const claim = await ctx.rows.claimSubmit(runId, key, line, row, job.data.costMicros ?? 0);
  if (claim.outcome === 'canceled' || claim.outcome === 'failed') await flushRow(ctx, runId, key);
  if (claim.outcome !== 'submit') return claim.outcome;
  const { attempt, endpoint } = claim;

  // The producer already refused s3:// faces outside the allowed buckets; a row queued by another
  // producer (older, or with other settings) is checked again before our credentials presign it.
  const refused = row.faceKind === 's3' ? s3FaceRefusal(row.faceUrl, s3FacePolicy(ctx.cfg)) : undefined;
  if (refused) {
    await ctx.rows.releaseSubmit(runId, key, attempt, refused);
    if (await ctx.rows.finishRow(runId, key, 'failed', `face_url: ${refused}`, ['pending'])) await flushRow(ctx, runId, key);
    return 'rejected';
  }

  try {
    const input = { ...row.input, image_urls: [await faceUrlForFal(ctx, row)] };
    const res = await ctx.fal.queue.submit(endpoint, { input, webhookUrl: webhookUrlFor(ctx, runId, key, attempt) });
    const recorded = await ctx.rows.recordSubmit(runId, key, attempt, res.request_id, Date.now() + ctx.policy.reconcile.graceMs);
    if (recorded === 'canceled') {
      // The run was canceled while this call was on its way: take the request back at once.
      await cancelRequest(ctx, endpoint, res.request_id);
      if (await ctx.rows.finishRow(runId, key, 'canceled', 'run canceled while this row was being submitted', ['submitted'], res.request_id)) {
        await flushRow(ctx, runId, key);
      }
      return 'canceled';
    }
    return 'submitted';
  } catch (raw) {
    const err = classifyFalError(raw);
    if (err instanceof FalAmbiguousError) {
      // fal may have accepted it: its webhook names this row and attempt. Paying again now could pay
      // twice; the reconciler resubmits only if nothing arrives within the grace period.
      ctx.logger.warn({ runId, row: key, attempt, err: err.message }, 'submission outcome unknown; waiting for a webhook');
      return 'unknown';
    }
    await ctx.rows.releaseSubmit(runId, key, attempt, err.message);
    if (err instanceof FalAuthError) {
      await pauseSubmissions(ctx, `${err.message}. Fix FAL_KEY, then run \`portrait-batch resume\` (or restart workers with the new key).`);
      return delay(ctx, job, token);
    }
    if (err instanceof FalRejectedError || !(err instanceof FalTransientError)) {
      if (await ctx.rows.finishRow(runId, key, 'failed', err.message, ['pending'])) await flushRow(ctx, runId, key);
      return 'rejected';
    }
    if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1)) {
      const reason = `submission failed after ${job.opts.attempts} tries: ${errorMessage(err)}`;
      if (await ctx.rows.finishRow(runId, key, 'failed', reason, ['pending'])) await flushRow(ctx, runId, key);
      return 'failed';
    }
    throw err; // BullMQ retries with exponential backoff, jitter and Retry-After (see submitBackoff)
  }
}

async function delay(ctx: Context, job: Job, token?: string): Promise<never> {
  await job.moveToDelayed(Date.now() + ctx.policy.submit.pauseRecheckMs, token);
  throw new DelayedError();
}

/** fal.queue.cancel, best effort: a request already running or done cannot be canceled, and that is fine. */
export async function cancelRequest(ctx: Context, endpoint: string, requestId: string): Promise<boolean> {
  try {
    await ctx.fal.queue.cancel(endpoint, { requestId });
    return true;
  } catch (err) {
    ctx.logger.debug({ requestId, err: errorMessage(err) }, 'fal did not cancel the request');
    return false;
  }
}

