// Submit jobs: take one of FAL_CONCURRENCY places on fal's side, claim the row (the attempt is
// recorded before fal is called), call fal.queue.submit (with a webhook URL that names the row and
// carries a token only we can mint, or, in poll mode, none and a first poll job), record request_id ->
// row. Failures are sorted by what to do: try later (429/5xx), fail the row (422/4xx), pause
// (401/403), or wait and let the reconciler decide (the call may have reached fal).
import { randomUUID } from 'node:crypto';
import { basename } from 'node:path';
import { DelayedError, RateLimitError, type Job } from 'bullmq';
import { requiredVar } from '../core/config.ts';
import type { Context } from '../core/context.ts';
import { DependencyError, DEPENDENCY_NAMES, asS3Failure, formatDuration, isRedisOutage, outageOf } from '../core/dependencies.ts';
import { FalAmbiguousError, FalAuthError, FalRejectedError, FalTransientError, errorMessage } from '../core/errors.ts';
import { classifyFalError } from '../core/fal.ts';
import { verdictOf, type FalErrorInfo } from '../core/falErrors.ts';
import { falSlots } from '../core/falSlots.ts';
import { keys } from '../core/keys.ts';
import { getPause, pauseSubmissions } from '../core/pause.ts';
import { redisRestarts } from '../core/redisRestarts.ts';
import type { SubmitJob } from '../core/queues.ts';
import { UnexpectedReplyError, type RowData } from '../core/rowState.ts';
import { parseS3Url } from '../core/s3.ts';
import { mintWebhookToken, TOKEN_PARAM } from '../core/webhookToken.ts';
import { faceRuleRefusal, s3FacePolicy, storedFaceRule, type S3FacePolicy } from '../manifest/index.ts';
import { falFaceCacheKey, isFaceRefusal } from './falFaceRefusal.ts';
import { flushRow } from './flush.ts';
import { firstPollDelay, runTiming, schedulePoll } from './poll.ts';

/** Face policies of recent runs, per config: a run's stored rule never changes, so one read of the run serves all its rows. */
const facePolicies = new WeakMap<object, Map<string, S3FacePolicy>>();

async function facePolicyOf(ctx: Context, runId: string): Promise<S3FacePolicy> {
  let cache = facePolicies.get(ctx.cfg);
  if (!cache) facePolicies.set(ctx.cfg, (cache = new Map()));
  const known = cache.get(runId);
  if (known) return known;
  const run = await ctx.rows.getRun(runId);
  const policy = s3FacePolicy(ctx.cfg, run && storedFaceRule(run.options));
  if (!run) return policy;
  if (cache.size >= 256) cache.delete(cache.keys().next().value!);
  cache.set(runId, policy);
  return policy;
}

/**
 * fal keeps what it generated (result images on its CDN) this long: longer than any retry of a
 * result's download (STORE_MAX_TRIES, webhook re-deliveries over 2 h, a worker down for a day), short
 * enough that portraits of real faces do not stay public for days.
 */
export const FAL_OBJECT_EXPIRES_SECONDS = 48 * 3600;

/** Our webhook URL for one attempt of a row: its run/row/attempt, with a token only we can mint for them. */
export function webhookUrlFor(ctx: Context, runId: string, key: string, attempt: number): string {
  const secret = requiredVar(ctx.cfg, 'WEBHOOK_SECRET', 'worker');
  const token = mintWebhookToken(secret, { runId, key, attempt });
  const q = new URLSearchParams({ run: runId, row: key, attempt: String(attempt), [TOKEN_PARAM]: token });
  return `${ctx.cfg.webhookUrl}?${q}`;
}

/** The URL fal fetches the face from: s3:// faces and uploaded local and data: faces are handed over at submit time. */
export async function faceUrlForFal(ctx: Context, row: RowData): Promise<string> {
  if (row.faceKind === 's3') {
    const { bucket, key } = parseS3Url(row.faceUrl);
    return s3FaceForFal(ctx, bucket, key);
  }
  if (row.faceKind === 'local') {
    if (!row.faceObjectKey) throw new Error(`local face ${row.faceUrl} was not uploaded`);
    return s3FaceForFal(ctx, ctx.storage.bucket, row.faceObjectKey);
  }
  // A data: face was uploaded by the producer (rows queued before that carry the URI itself).
  if (row.faceKind === 'data' && row.faceObjectKey) return s3FaceForFal(ctx, ctx.storage.bucket, row.faceObjectKey);
  return row.faceUrl;
}

/**
 * A face held in S3, as fal can fetch it: a presigned URL (on S3_PUBLIC_ENDPOINT when set), or, when
 * fal cannot reach the bucket (a private or loopback S3_ENDPOINT and no S3_PUBLIC_ENDPOINT), a copy in
 * fal's own storage, uploaded once for all the rows that name it and expiring with the presign lifetime.
 */
async function s3FaceForFal(ctx: Context, bucket: string, key: string): Promise<string> {
  const ttl = ctx.cfg.PRESIGN_EXPIRES_SECONDS;
  if (!ctx.cfg.facesViaFalStorage) return ctx.storage.presign(key, ttl, bucket);
  const cacheKey = keys.falFile(bucket, key);
  const cached = await ctx.redis.get(cacheKey);
  if (cached) return cached;
  const { bytes, contentType } = await ctx.storage.getBytes(key, bucket).catch((err: unknown) => {
    throw err instanceof Error && asS3Failure(err) instanceof DependencyError ? asS3Failure(err) : new FaceReadError(`the face could not be read from S3: ${errorMessage(err)}`);
  });
  const url = await ctx.fal.storage.upload(new File([bytes], basename(key), { type: contentType }), { lifecycle: { expiresIn: ttl } });
  // Reused for half its life, so a row never hands fal a copy about to expire.
  await ctx.redis.set(cacheKey, url, 'EX', Math.max(60, Math.floor(ttl / 2)));
  return url;
}

export async function processSubmit(ctx: Context, job: Job<SubmitJob>, token?: string): Promise<string> {
  const { runId, key, line, ordinal, row } = job.data;
  const restarts = redisRestarts(ctx);
  // Just after a Redis restart: rows whose claims it lost are written back first (redisRestarts.ts).
  if (restarts.holding()) return delay(ctx, job, token, restarts.holdEndsAt());
  if (await getPause(ctx)) return delay(ctx, job, token);
  const slots = falSlots(ctx);
  const slot = await slots.acquire(runId, key);
  if (slot === 'full') {
    // Every place on fal is taken: the whole submit queue waits a moment (the job keeps its turn).
    await ctx.queues.submit.rateLimit(await slotWaitMs(ctx, runId));
    throw new RateLimitError();
  }
  // The claim is named, so asking again after a timeout (or ioredis sending it again after a reconnect)
  // gets this claim back instead of "in flight": a claim that ran unheard is still submitted, once.
  const claimId = randomUUID();
  const claim = await untilAnswered(() => ctx.rows.claimSubmit(runId, key, line, row, job.data.costMicros ?? 0, ordinal, claimId), isUnanswered);
  if (claim.outcome === 'canceled' || claim.outcome === 'failed') await flushRow(ctx, runId, key);
  if (claim.outcome === 'adopted') {
    // fal has this attempt already (its webhook named it while Redis had lost the row): follow it, never pay again.
    ctx.logger.warn({ runId, row: key, attempt: claim.attempt }, 'attempt taken back from its webhook after a Redis rollback; not submitted again');
    return 'adopted';
  }
  if (claim.outcome !== 'submit') {
    if (slot === 'acquired') await slots.release(runId, key);
    return claim.outcome;
  }
  const { attempt, endpoint } = claim;
  restarts.claimed({ runId, key, line, ordinal, data: row, costMicros: job.data.costMicros, attempt });
  // Redis went away since the claim: it is written back (if lost) before fal is called.
  await restarts.whenClear();

  // The producer already refused faces outside the run's face rule; a row queued by another producer
  // (older, or with other settings) is checked again, by the rule stored with the run, before our
  // credentials presign it (or fal is handed a link to our own S3).
  const refused = row.faceKind === 's3' || row.faceKind === 'http' ? faceRuleRefusal(row.faceUrl, await facePolicyOf(ctx, runId)) : undefined;
  if (refused) {
    await releaseClaim(ctx, runId, key, attempt, refused);
    await slots.release(runId, key);
    if (await ctx.rows.finishRow(runId, key, 'failed', `face_url: ${refused}`, ['pending'], '', { type: 'face_refused', category: 'input' })) await flushRow(ctx, runId, key);
    return 'rejected';
  }

  const polling = ctx.cfg.delivery.mode === 'poll';
  try {
    const submitWith = async () =>
      ctx.fal.queue.submit(endpoint, {
        input: { ...row.input, image_urls: [await faceForSubmit(ctx, row)] },
        webhookUrl: polling ? undefined : webhookUrlFor(ctx, runId, key, attempt),
        storageSettings: { expiresIn: FAL_OBJECT_EXPIRES_SECONDS },
        // fal gives up on a request it has not started by then, as the reconciler would.
        startTimeout: Math.max(2, Math.floor(ctx.cfg.QUEUE_DEADLINE_MS / 1000)),
      });
    const res = await submitWith().catch(async (raw: unknown) => {
      // fal refused our copy of the face in its storage (gone with a restarted or expired fal
      // storage): upload it again, once, instead of handing fal the same dead URL.
      const cacheKey = falFaceCacheKey(ctx, row);
      if (!cacheKey || !isFaceRefusal(classifyFalError(raw))) throw raw;
      // Info: it follows a fal restart or an expiry, and costs nothing but the upload; the row goes on.
      ctx.logger.info({ runId, row: key, err: errorMessage(raw) }, 'fal refused the face copy in its storage: uploading it again');
      await ctx.redis.del(cacheKey);
      return submitWith();
    });
    restarts.submitted(runId, key, attempt, res.request_id);
    // fal accepted the attempt: from here nothing may take it back (the catch below would release it
    // and submit again), so Redis being away only makes this wait.
    const firstPoll = polling ? await firstPollDelay(ctx, runId, endpoint, res.queue_position).catch(() => ctx.policy.poll.coldFirstMs) : 0;
    const now = Date.now();
    const nextPollAt = polling ? now + firstPoll + ctx.policy.poll.safetyMs : now + ctx.policy.reconcile.graceMs;
    const claimed = { line, ordinal, data: row, costMicros: job.data.costMicros };
    const recorded = await untilAnswered(() => ctx.rows.recordSubmit(runId, key, attempt, res.request_id, nextPollAt, claimed));
    if ((recorded === 'ok' || recorded === 'adopted') && polling) {
      await schedulePoll(ctx, { runId, key, requestId: res.request_id, queuePosition: res.queue_position }, 0, firstPoll);
    } else if (recorded !== 'ok' && recorded !== 'adopted') {
      // The row moved on while fal answered (its webhook came first, it ended, its run was canceled):
      // its place on fal is free.
      await slots.release(runId, key);
    }
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
    const err = raw instanceof DependencyError ? raw : classifyFalError(raw);
    const down = isRedisOutage(raw) ? 'redis' : outageOf(err);
    if (down) ctx.dependencies.down(down, err instanceof DependencyError ? err.cause : err);
    if (err instanceof FalAmbiguousError) {
      // fal may have accepted it: its webhook names this row and attempt. Paying again now could pay
      // twice; the reconciler resubmits only if nothing arrives within the grace period.
      // Per row only at info while fal is down: the outage itself is the warning, said once.
      ctx.logger[down ? 'info' : 'warn']({ runId, row: key, attempt, err: err.message }, 'submission outcome unknown; waiting for a webhook');
      return 'unknown';
    }
    await releaseClaim(ctx, runId, key, attempt, err.message);
    await slots.release(runId, key);
    if (err instanceof FalAuthError) {
      await pauseSubmissions(ctx, `${err.message}. Fix FAL_KEY, then run \`portrait-batch resume\` (or restart workers with the new key).`);
      return delay(ctx, job, token);
    }
    if (!down && (err instanceof FalRejectedError || !(err instanceof FalTransientError))) {
      // fal refused the submission itself (a 422 at submit, our start timeout…): its kind says why.
      const v = verdictOf((err as { fal?: FalErrorInfo }).fal ?? {});
      if (await ctx.rows.finishRow(runId, key, 'failed', err.message, ['pending'], '', { type: v.type, category: v.category })) await flushRow(ctx, runId, key);
      return 'rejected';
    }
    // Tried again for SUBMIT_RETRY_WINDOW from the first failure, never a count of tries: an outage of
    // fal (or of S3, for a face) pauses submissions and the row waits; a 429/5xx is retried with backoff.
    const since = await retryingSince(job);
    const waited = Date.now() - since;
    if (waited >= ctx.policy.submit.retryWindowMs) {
      const what = down ? `${DEPENDENCY_NAMES[down]} unreachable` : 'fal kept failing it';
      const reason = `submission failed: ${what} for ${formatDuration(waited)} (SUBMIT_RETRY_WINDOW): ${errorMessage(err)}`;
      const kind = { type: (err as { fal?: FalErrorInfo }).fal?.type ?? 'submit_failed', category: 'fal_transient' as const };
      if (await ctx.rows.finishRow(runId, key, 'failed', reason, ['pending'], '', kind)) await flushRow(ctx, runId, key);
      return 'failed';
    }
    if (down) return holdFor(job, ctx.policy.dependencies.recheckMs, token);
    throw err; // BullMQ retries with exponential backoff, jitter and Retry-After (see submitBackoff)
  }
}

/**
 * A row command asked until Redis answers it (1 s doubling to 30 s between tries): the claim (named, so
 * a repeat gets the same claim) and an accepted submission's record. `retryable`: which failures are
 * asked again (default: any but a reply the command may not give).
 */
async function untilAnswered<T>(command: () => Promise<T>, retryable: (err: unknown) => boolean = (err) => !(err instanceof UnexpectedReplyError)): Promise<T> {
  for (let wait = 1000; ; wait = Math.min(wait * 2, 30_000)) {
    try {
      return await command();
    } catch (err) {
      if (!retryable(err)) throw err;
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

/**
 * A command that may still have run: ioredis gave up waiting for its answer (commandTimeout), not Redis
 * refusing it (MISCONF, READONLY: nothing ran, and the job's own retry claims again).
 */
const isUnanswered = (err: unknown) => /Command timed out/.test(errorMessage(err));

/**
 * Takes a claimed attempt back (fal did not accept it). The restart watch forgets the claim first: a
 * release waiting out a Redis restart runs after it, and a write-back of the claim in between would
 * raise the row again to an attempt nobody submits (counted, then resubmitted by the reconciler).
 */
async function releaseClaim(ctx: Context, runId: string, key: string, attempt: number, reason: string): Promise<void> {
  redisRestarts(ctx).released(runId, key, attempt);
  await ctx.rows.releaseSubmit(runId, key, attempt, reason);
}

/** When this submission first failed; recorded on the job the first time. */
async function retryingSince(job: Job<SubmitJob>): Promise<number> {
  if (job.data.retryingSince) return job.data.retryingSince;
  const now = Date.now();
  await job.updateData({ ...job.data, retryingSince: now });
  return now;
}

/** A face in S3 that could not be read (missing, refused): the row's own problem, tried again like a 5xx. */
class FaceReadError extends Error {
  override name = 'FaceReadError';
}

/** The face URL for the submission; a failure to hand it over reached no fal queue, so it is never ambiguous. */
async function faceForSubmit(ctx: Context, row: RowData): Promise<string> {
  try {
    return await faceUrlForFal(ctx, row);
  } catch (raw) {
    if (raw instanceof DependencyError) throw raw; // S3 down: the row waits for it
    if (raw instanceof FaceReadError) throw new FalTransientError(`the face could not be handed to fal: ${raw.message}`);
    const err = classifyFalError(raw);
    if (err instanceof FalAuthError || err instanceof FalRejectedError) throw err;
    // fal's storage unreachable or silent: an outage of fal, never an ambiguous submission.
    if (outageOf(err) === 'fal') throw new DependencyError('fal', err);
    throw new FalTransientError(`the face could not be handed to fal: ${errorMessage(raw)}`, (err as FalTransientError).status);
  }
}

/** About the time until a place on fal frees up: a fraction of the run's run time per place. */
async function slotWaitMs(ctx: Context, runId: string): Promise<number> {
  const { runMs } = await runTiming(ctx, runId);
  const { waitMinMs, waitMaxMs, waitUnknownMs } = ctx.policy.falSlots;
  if (runMs === undefined) return waitUnknownMs;
  return Math.round(Math.min(waitMaxMs, Math.max(waitMinMs, runMs / (4 * ctx.cfg.FAL_CONCURRENCY))));
}

async function delay(ctx: Context, job: Job, token?: string, until?: number): Promise<never> {
  return holdFor(job, until === undefined ? ctx.policy.submit.pauseRecheckMs : Math.max(0, until - Date.now()), token);
}

/** Puts the job back for `ms` without counting a try (its queue is paused meanwhile, or soon). */
async function holdFor(job: Job, ms: number, token?: string): Promise<never> {
  await job.moveToDelayed(Date.now() + ms, token);
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

