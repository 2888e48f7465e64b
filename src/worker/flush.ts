// After a row's terminal transition: write its metadata to S3, then drop its Redis state. If a
// process dies in between, the reconciler finds the terminal row still in Redis and flushes it again.
import type { Context } from '../core/context.ts';
import { asS3Failure } from '../core/dependencies.ts';
import { TERMINAL } from '../core/keys.ts';
import { runLayout } from '../core/layout.ts';
import { enqueueFinalize } from '../core/queues.ts';
import type { Row } from '../core/rowState.ts';
import { logProgressMilestone } from './milestones.ts';
import { addReportLine, flushReportParts, outcomeOf } from '../outputs/reportParts.ts';

export function rowMeta(row: Row) {
  return {
    runId: row.runId,
    rowKey: row.key,
    line: row.line,
    id: row.data.id ?? null,
    status: row.state,
    error: row.error ?? null,
    ...errorKindOf(row),
    /** Every failed attempt's error, in order (a row retried after fal's server errors lists each). */
    attempt_errors: row.attemptErrors,
    input: { face_url: row.data.faceUrl, ...row.data.input },
    extra: row.data.extra,
    // What preflight read of the face (null when the run looked at none).
    face_width: row.data.face?.width ?? null,
    face_height: row.data.face?.height ?? null,
    face_bytes: row.data.face?.bytes ?? null,
    face_sha256: row.data.face?.sha256 ?? null,
    request_id: row.requestId ?? null,
    request_ids: row.requestIds,
    attempts: row.attempt,
    // A string: fal's seeds are 64-bit, beyond what a JSON number keeps exactly.
    seed: row.seed === undefined || row.seed === '' ? null : row.seed,
    prompt: row.prompt ?? null,
    images: (row.images ?? []).map((i) => ({
      key: i.key,
      source_url: i.sourceUrl.startsWith('data:') ? 'data:(inline)' : i.sourceUrl,
      content_type: i.contentType,
      width: i.width ?? null,
      height: i.height ?? null,
      bytes: i.bytes,
      sha256: i.sha256,
    })),
    timings: {
      created_at: iso(row.createdAt),
      submitted_at: iso(row.submittedAt),
      finished_at: iso(row.finishedAt),
      seconds_to_finish: row.finishedAt && row.createdAt ? (row.finishedAt - row.createdAt) / 1000 : null,
    },
  };
}
export type RowMeta = ReturnType<typeof rowMeta>;

/** A finished row's error type and category; a row ended without one (older code) gets one by its state. */
function errorKindOf(row: Row): { error_type: string | null; error_category: string | null } {
  if (row.state === 'completed') return { error_type: null, error_category: null };
  if (row.state === 'canceled') return { error_type: row.errorType ?? 'run_canceled', error_category: row.errorCategory ?? 'canceled' };
  return { error_type: row.errorType || null, error_category: row.errorCategory ?? 'other' };
}

const iso = (ms?: number) => (ms ? new Date(ms).toISOString() : null);

/** `read`: the row as the transition that ended it answered it, when the caller has it (spares a read). */
export async function flushRow(ctx: Context, runId: string, key: string, read?: Row): Promise<void> {
  const row = read ?? (await ctx.rows.getRow(runId, key));
  if (!row || !(TERMINAL as readonly string[]).includes(row.state)) return;
  const meta = rowMeta(row);
  await ctx.storage.putJson(runLayout(ctx.cfg.S3_PREFIX, runId).meta(key), meta).catch((err: unknown) => {
    throw asS3Failure(err); // S3 down: the reconciler flushes the row once it is back
  });
  addReportLine(ctx, runId, row.line, outcomeOf(meta));
  if (await ctx.rows.forgetRow(runId, key)) {
    await flushReportParts(ctx, runId);
    await enqueueFinalize(ctx, runId);
  } else await logProgressMilestone(ctx, runId);
}
