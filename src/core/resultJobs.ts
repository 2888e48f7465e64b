// Adding result jobs (webhook or poll) and reading their payloads. Redis holds only small jobs: a
// payload over INLINE_PAYLOAD_MAX_BYTES (sync_mode results carry their images inline) is staged in S3
// under the run's prefix and the job holds its key; the staged object is removed once the job is done.
import type { Context } from './context.ts';
import { runLayout } from './layout.ts';
import { resultJobOptions, type ResultJob } from './queues.ts';

/** fal's URL payloads are a few hundred bytes an image; anything larger goes to S3. */
export const INLINE_PAYLOAD_MAX_BYTES = 8 * 1024;

/** Adds the result job for a request of run `runId` (a duplicate of a job that exists is a no-op). */
export async function addResultJob(ctx: Context, runId: string, job: ResultJob, payloadJson?: string, opt: { replaceFinished?: boolean } = {}): Promise<void> {
  const opts = resultJobOptions(ctx.policy, job.requestId, job.status);
  if (opt.replaceFinished) {
    // The row still waits for this result although its job already finished: the job's outcome was
    // lost (Redis restarted without its last writes). A job id that exists would make the add a no-op.
    const prior = await ctx.queues.results.getJob(opts.jobId);
    const state = prior ? await prior.getState() : undefined;
    if (state === 'completed' || state === 'failed') await prior!.remove();
  }
  if (job.payload !== undefined) {
    const json = payloadJson ?? JSON.stringify(job.payload);
    if (Buffer.byteLength(json) > INLINE_PAYLOAD_MAX_BYTES) {
      // A re-delivery of a result already queued: nothing to stage again.
      if (await ctx.queues.results.getJob(opts.jobId)) return;
      const payloadKey = runLayout(ctx.cfg.S3_PREFIX, runId).stagedResult(opts.jobId);
      await ctx.storage.upload(payloadKey, json, 'application/json');
      const { payload: _inline, ...rest } = job;
      job = { ...rest, payloadKey };
    }
  }
  await ctx.queues.results.add('result', job, opts);
}

/** The job's payload, from S3 when it was staged there. */
export async function resultPayload(ctx: Context, job: ResultJob): Promise<unknown> {
  if (!job.payloadKey) return job.payload;
  const payload = await ctx.storage.getJson<unknown>(job.payloadKey);
  if (payload === undefined) throw new Error(`staged result payload ${job.payloadKey} is missing`);
  return payload;
}

/** Removes a staged payload once its job needs it no more. */
export async function dropStagedPayload(ctx: Context, job: ResultJob): Promise<void> {
  if (job.payloadKey) await ctx.storage.remove(job.payloadKey);
}
