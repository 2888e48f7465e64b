// What `portrait-batch status` and `runs` show: a run's counters, state, pace (elapsed, rows/s, ETA),
// cost so far, pause/stop reason, links to retries and where its outputs are.
import type { Context } from './core/context.ts';
import { DEPENDENCY_NAMES, formatDuration, type Outage } from './core/dependencies.ts';
import { runLayout } from './core/layout.ts';
import { keys } from './core/keys.ts';
import { errorMessage } from './core/errors.ts';
import { RunControlError } from './control/errors.ts';
import { getPause } from './core/pause.ts';
import type { RunRecord } from './core/rowState.ts';
import { finishedSummary, summaryOf, type Summary } from './outputs/summary.ts';

export { finishedSummary };

export async function runStatus(ctx: Context, runId: string, now = Date.now()) {
  const run = await ctx.rows.getRun(runId);
  if (!run) return expiredRunStatus(ctx, runId);
  const pause = await getPause(ctx);
  // Redis, S3 or fal unreachable as any process recorded it: the run waits for it.
  const waitingFor = run.finishedAt ? [] : (await ctx.dependencies.outages()).map(({ dependency, since, reason }) => ({ dependency, since: new Date(since).toISOString(), reason }));
  const layout = runLayout(ctx.cfg.S3_PREFIX, runId);
  const inFlight = run.queued - run.completed - run.failed - run.canceled;
  const atFal = await rowsAtFal(ctx, runId, inFlight);
  return {
    ...summaryOf(run, pause && !run.finishedAt ? 'paused' : run.state),
    // Known from the start: startRun read the whole manifest (or the retry's selection).
    total: run.total ?? (typeof run.options.rows === 'number' ? run.options.rows : null),
    pauseReason: pause?.reason ?? null,
    waitingFor,
    queued: run.queued,
    inFlight,
    ...pace(run, now),
    ...atFal,
    // The bucket from the config: a running run's status builds no S3 client.
    report: run.finishedAt ? `s3://${ctx.cfg.S3_BUCKET}/${layout.report}` : null,
  };
}
/**
 * A finished run whose Redis keys expired (RUN_RETENTION): what its summary.json says, nothing in
 * flight. Undefined when there is no such run (or its summary was never written).
 */
async function expiredRunStatus(ctx: Context, runId: string) {
  // Redis has no such run: only S3 can tell an expired run from none. When S3 cannot be asked, say so
  // in the answer instead of a bare S3 error (or a "no run" that may be wrong).
  const summary = await finishedSummary(ctx, runId).catch((err: unknown) => {
    throw new RunControlError(`no run ${runId} in Redis, and S3 (where an expired run's summary.json would be) could not be read: ${errorMessage(err)}`);
  });
  if (!summary) return undefined;
  const done = summary.completed + summary.failed + summary.rejected + summary.canceled;
  const elapsedSeconds = summary.finishedAt ? Math.max(0, (Date.parse(summary.finishedAt) - Date.parse(summary.startedAt)) / 1000) : 0;
  return {
    ...summary,
    pauseReason: null,
    waitingFor: [],
    queued: summary.total - summary.rejected,
    inFlight: 0,
    done,
    elapsedSeconds: round1(elapsedSeconds),
    rowsPerSecond: round1(elapsedSeconds > 0 ? done / elapsedSeconds : 0),
    etaSeconds: 0,
    waitingForFal: 0,
    queuedAtFal: 0,
    runningAtFal: 0,
    report: `s3://${ctx.storage.bucket}/${runLayout(ctx.cfg.S3_PREFIX, runId).report}`,
  };
}

/**
 * Where the run's rows in flight are: waiting here for a place on fal (FAL_CONCURRENCY), queued at
 * fal (submitted, not yet seen running), or running at fal (a poll saw it IN_PROGRESS). With webhooks,
 * fal is asked only about late requests, so a running request counts as queued until then.
 */
async function rowsAtFal(ctx: Context, runId: string, inFlight: number) {
  const rowKeys = await ctx.rows.activeRowKeys(runId);
  const counts = { waitingForFal: 0, queuedAtFal: 0, runningAtFal: 0 };
  let storing = 0;
  for (let i = 0; i < rowKeys.length; i += 500) {
    const pipe = ctx.redis.pipeline();
    for (const key of rowKeys.slice(i, i + 500)) pipe.hmget(keys.row(runId, key), 'state', 'requestId', 'startedFor');
    for (const [, fields] of (await pipe.exec()) ?? []) {
      const [state, requestId, startedFor] = (fields ?? []) as (string | null)[];
      if (state === 'storing') storing++;
      else if (state === 'submitting' || state === 'submitted') {
        if (state === 'submitted' && requestId && startedFor === requestId) counts.runningAtFal++;
        else counts.queuedAtFal++;
      }
    }
  }
  // The rest of the rows in flight wait here: for their submit job's turn or a place on fal.
  counts.waitingForFal = Math.max(0, inFlight - storing - counts.queuedAtFal - counts.runningAtFal);
  return counts;
}

export type RunStatus = NonNullable<Awaited<ReturnType<typeof runStatus>>>;

/** Rows finished (any outcome) and how fast: elapsed seconds, rows per second, seconds left (null until known). */
export function pace(run: RunRecord, now = Date.now()) {
  const done = run.completed + run.failed + run.rejected + run.canceled;
  const elapsedSeconds = Math.max(0, ((run.finishedAt ?? now) - run.createdAt) / 1000);
  const rowsPerSecond = elapsedSeconds > 0 ? done / elapsedSeconds : 0;
  const total = run.total ?? (run.options.rows as number | undefined);
  const left = total === undefined ? undefined : Math.max(0, total - done);
  const etaSeconds = run.finishedAt ? 0 : left !== undefined && rowsPerSecond > 0 ? left / rowsPerSecond : null;
  return {
    done,
    elapsedSeconds: round1(elapsedSeconds),
    rowsPerSecond: round1(rowsPerSecond),
    etaSeconds: etaSeconds === null ? null : round1(etaSeconds),
  };
}

const round1 = (v: number) => Math.round(v * 10) / 10;

/** One run in `runs`: state, counts, started/finished, cost. */
export function runListEntry(run: RunRecord) {
  return listEntryOf(summaryOf(run, run.state));
}

/** A run in `runs` from its summary (a finished run whose Redis keys expired reads its summary.json). */
export function listEntryOf(s: Summary) {
  return {
    runId: s.runId,
    state: s.state,
    total: s.total,
    completed: s.completed,
    failed: s.failed,
    rejected: s.rejected,
    canceled: s.canceled,
    startedAt: s.startedAt,
    finishedAt: s.finishedAt,
    cost: s.cost,
    estimatedCost: s.estimatedCost,
    currency: s.currency,
  };
}
export type RunListEntry = ReturnType<typeof runListEntry>;

const money = (v: number, c: string) => `${v.toFixed(2)} ${c}`;
const duration = (s: number) => (s >= 3600 ? `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m` : s >= 60 ? `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.round(s)}s`);

export function formatStatus(s: RunStatus): string {
  const lines = [
    `run ${s.runId}: ${s.state}${s.finishedAt ? ` (finished ${s.finishedAt})` : ''}`,
    `  rows: ${s.total ?? `${s.queued + s.rejected}+ (still reading)`} · completed ${s.completed} · failed ${s.failed} · rejected ${s.rejected} · canceled ${s.canceled} · in flight ${s.inFlight}`,
    `  elapsed ${duration(s.elapsedSeconds)} · ${s.rowsPerSecond} rows/s${s.etaSeconds !== null && !s.finishedAt ? ` · ETA ${duration(s.etaSeconds)}` : ''}`,
    `  fal submissions: ${s.submits} · cost so far ${money(s.cost, s.currency)}${s.submittedCost !== s.cost ? ` (${money(s.submittedCost, s.currency)} submitted; fal does not bill its server errors)` : ''} (estimated for the run ${money(s.estimatedCost, s.currency)}${s.maxCost !== null ? `, cap ${money(s.maxCost, s.currency)}` : ''})`,
    `  at fal: ${s.runningAtFal} running, ${s.queuedAtFal} queued · ${s.waitingForFal} waiting here for a place (FAL_CONCURRENCY)`,
  ];
  const byCategory = Object.entries(s.failedByCategory);
  if (byCategory.length) lines.push(`  failed by category: ${byCategory.map(([c, n]) => `${c} ${n}`).join(' · ')}`);
  if (s.pauseReason) lines.push(`  PAUSED: ${s.pauseReason}`);
  for (const w of s.waitingFor) lines.push(`  ${waitingLine(w)}`);
  if (s.stopReason) lines.push(`  ${s.state === 'canceled' ? 'CANCELED' : 'STOPPED'}: ${s.stopReason}`);
  if (s.retryOf) lines.push(`  retries the failed rows of ${s.retryOf}`);
  if (s.retriedBy.length) lines.push(`  failed rows retried by ${s.retriedBy.join(', ')}`);
  if (s.report) lines.push(`  report: ${s.report}`);
  return lines.join('\n');
}

/** "waiting for S3 since 2026-12-02T09:10:00.000Z (4m10s): connection refused". */
export function waitingLine(w: { dependency: Outage['dependency']; since: string; reason: string }, now = Date.now()): string {
  return `waiting for ${DEPENDENCY_NAMES[w.dependency]} since ${w.since} (${formatDuration(now - Date.parse(w.since))}): ${w.reason}`;
}

export function formatRunList(runs: RunListEntry[]): string {
  if (!runs.length) return 'no runs';
  return runs
    .map((r) => `${r.runId}  ${r.state.padEnd(8)}  ${r.completed}/${r.total} completed, ${r.failed} failed, ${r.rejected} rejected, ${r.canceled} canceled  started ${r.startedAt}${r.finishedAt ? `  finished ${r.finishedAt}` : ''}  ${money(r.cost, r.currency)}`)
    .join('\n');
}
