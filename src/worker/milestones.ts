// One info line per 10% of a run finished, whichever worker finishes the row that crosses the step:
// HSETNX on the run hash lets exactly one process log each step, and a per-process memo spares the
// Redis call once this process has seen a step logged. (started, produced and finished are logged
// where they happen: the producer and the report writer.)
import type { Context } from '../core/context.ts';
import { keys } from '../core/keys.ts';

const seen = new Map<string, number>();
const MEMO_LIMIT = 1000;

export async function logProgressMilestone(ctx: Context, runId: string): Promise<void> {
  const [total, completed, failed, rejected, canceled] = (await ctx.redis.hmget(keys.run(runId), 'total', 'completed', 'failed', 'rejected', 'canceled')).map(Number);
  if (!total) return; // still being read: steps are counted against the known total
  const done = (completed || 0) + (failed || 0) + (rejected || 0) + (canceled || 0);
  const step = Math.min(9, Math.floor((done * 10) / total));
  if (step < 1 || (seen.get(runId) ?? 0) >= step) return;
  if (seen.size > MEMO_LIMIT) seen.clear();
  seen.set(runId, step);
  if ((await ctx.redis.hsetnx(keys.run(runId), `milestone${step * 10}`, '1')) !== 1) return;
  ctx.logger.info({ runId, milestone: `${step * 10}%`, done, total, completed, failed, rejected, canceled }, `run ${runId} is ${step * 10}% done`);
}
