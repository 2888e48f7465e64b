import { setTimeout as sleep } from 'node:timers/promises';
import { getPause } from '../core/pause.ts';
import type { Context } from '../core/context.ts';
import type { RunRecord } from '../core/rowState.ts';

/** Polls the run until its report is written; calls onProgress on every change. */
export async function waitForRun(
  ctx: Context,
  runId: string,
  opts: { intervalMs?: number; timeoutMs?: number; onProgress?: (run: RunRecord, pause?: string) => void | Promise<void> } = {},
): Promise<RunRecord> {
  const deadline = opts.timeoutMs ? Date.now() + opts.timeoutMs : Infinity;
  let last = '';
  for (;;) {
    const run = await ctx.rows.getRun(runId);
    if (!run) throw new Error(`run ${runId} does not exist`);
    const pause = (await getPause(ctx))?.reason;
    const sig = `${run.state}:${run.completed}:${run.failed}:${run.canceled}:${run.rejected}:${run.total}:${pause ?? ''}`;
    if (sig !== last) {
      last = sig;
      await opts.onProgress?.(run, pause);
    }
    if (run.finishedAt) return run;
    if (Date.now() > deadline) throw new Error(`run ${runId} did not finish within ${opts.timeoutMs} ms (state ${run.state})`);
    await sleep(opts.intervalMs ?? ctx.policy.waitPollMs);
  }
}
