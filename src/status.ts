// What `portrait-batch status` shows: the run's counters, state, pause reason and where its outputs are.
import type { Context } from './core/context.ts';
import { runLayout } from './core/layout.ts';
import { getPause } from './core/pause.ts';
import { summaryOf } from './worker/finalize.ts';

export async function runStatus(ctx: Context, runId: string) {
  const run = await ctx.rows.getRun(runId);
  if (!run) return undefined;
  const pause = await getPause(ctx);
  const layout = runLayout(ctx.cfg.S3_PREFIX, runId);
  const inFlight = run.queued - run.completed - run.failed - run.canceled;
  return {
    ...summaryOf(run, pause && !run.finishedAt ? 'paused' : run.state),
    total: run.total ?? null,
    pauseReason: pause?.reason ?? null,
    queued: run.queued,
    inFlight,
    report: run.finishedAt ? `s3://${ctx.storage.bucket}/${layout.report}` : null,
  };
}
export type RunStatus = NonNullable<Awaited<ReturnType<typeof runStatus>>>;

export function formatStatus(s: RunStatus): string {
  const lines = [
    `run ${s.runId}: ${s.state}${s.finishedAt ? ` (finished ${s.finishedAt})` : ''}`,
    `  rows: ${s.total ?? `${s.queued + s.rejected}+ (still reading)`} · completed ${s.completed} · failed ${s.failed} · rejected ${s.rejected} · canceled ${s.canceled} · in flight ${s.inFlight}`,
    `  fal submissions: ${s.submits}`,
  ];
  if (s.pauseReason) lines.push(`  PAUSED: ${s.pauseReason}`);
  if (s.stopReason) lines.push(`  STOPPED: ${s.stopReason}`);
  if (s.report) lines.push(`  report: ${s.report}`);
  return lines.join('\n');
}
