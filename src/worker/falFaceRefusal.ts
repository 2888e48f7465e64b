// Faces that reach fal through fal's own storage (S3 not reachable from fal) are uploaded once and the
// URL cached for every row that names the face (`pb:falfile:*`). When fal refuses that URL — its
// storage forgot the file (a restarted fal, an expired upload) — the cached URL is dropped so the next
// submission uploads the face again, and a row whose request failed only for that gets one new
// attempt instead of failing: the face is fine, our copy of it was not.
import type { Context } from '../core/context.ts';
import { falSlots } from '../core/falSlots.ts';
import { keys } from '../core/keys.ts';
import { jobIds, submitJobOptions } from '../core/queues.ts';
import type { RowData } from '../core/rowState.ts';
import { parseS3Url } from '../core/s3.ts';
import { flushRow } from './flush.ts';

/** The cache key of the fal-storage copy of this row's face, when its face goes through fal storage. */
export function falFaceCacheKey(ctx: Pick<Context, 'cfg' | 'storage'>, row: RowData): string | undefined {
  if (!ctx.cfg.facesViaFalStorage) return undefined;
  if (row.faceKind === 's3') {
    const { bucket, key } = parseS3Url(row.faceUrl);
    return keys.falFile(bucket, key);
  }
  if ((row.faceKind === 'local' || row.faceKind === 'data') && row.faceObjectKey) return keys.falFile(ctx.storage.bucket, row.faceObjectKey);
  return undefined;
}

/** fal's answer names the face (`image_urls`): it could not load or download the image. */
export function isFaceRefusal(err: { name?: string; message?: string } | string | undefined): boolean {
  const text = typeof err === 'string' ? err : err?.name === 'FalRejectedError' ? (err.message ?? '') : '';
  return /image_urls/.test(text);
}

/**
 * A result that failed because fal refused this row's fal-storage face: drops the cached URL, and says
 * whether the row should get a new attempt (the first such refusal for this row; a second one means the
 * face itself is the problem, and the row fails as fal said).
 */
export async function forgetRefusedFalFace(ctx: Context, runId: string, key: string, row: RowData): Promise<boolean> {
  const cacheKey = falFaceCacheKey(ctx, row);
  if (!cacheKey) return false;
  await ctx.redis.del(cacheKey);
  return (await ctx.redis.set(keys.falFileRefused(runId, key), '1', 'EX', 7 * 86400, 'NX')) === 'OK';
}

/**
 * An ERROR result that refused this row's fal-storage face, for the row's current request: the cached
 * URL is dropped and the row gets a new attempt (once per row, within MAX_ATTEMPTS). Returns what
 * became of the row, or undefined when this is not such a refusal (the result is recorded as usual).
 */
export async function resubmitAfterFaceRefusal(
  ctx: Context,
  target: { runId: string; key: string },
  requestId: string,
  error: string,
): Promise<'resubmitted' | 'failed' | undefined> {
  if (!isFaceRefusal(error) || !ctx.cfg.facesViaFalStorage) return undefined;
  const row = await ctx.rows.getRow(target.runId, target.key);
  if (!row || row.state !== 'submitted' || row.requestId !== requestId) return undefined;
  if (!(await forgetRefusedFalFace(ctx, row.runId, row.key, row.data))) return undefined;
  const reason = `fal could not load the face from its storage (${error.slice(0, 300)}); uploaded again`;
  const outcome = await ctx.rows.supersede(row.runId, row.key, 'submitted', row.attempt, requestId, reason);
  if (outcome !== 'resubmit' && outcome !== 'failed') return undefined;
  await falSlots(ctx).release(row.runId, row.key);
  if (outcome === 'failed') {
    await flushRow(ctx, row.runId, row.key);
    return 'failed';
  }
  ctx.logger.warn({ runId: row.runId, row: row.key, attempt: row.attempt, requestId }, 'fal refused the face copy in its storage: uploading it again as a new attempt');
  await ctx.queues.submit.add(
    'submit',
    { runId: row.runId, key: row.key, line: row.line, ordinal: row.ordinal, row: row.data, costMicros: row.cost },
    { jobId: jobIds.submit(row.runId, row.key, row.attempt), ...submitJobOptions(ctx.policy) },
  );
  return 'resubmitted';
}
