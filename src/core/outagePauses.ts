// The queues an outage pauses, globally (every worker process), as the auth pause does: while S3 is
// down nothing new is submitted (its result could not be stored) and no result job runs; while fal is
// down nothing is submitted. A queue is resumed only when nothing holds it any more — no outage
// recorded for a dependency that pauses it, no auth pause — so one outage ending never lifts another's
// pause. The reconciler calls resumeUnheldQueues every sweep too: a queue paused by a process that
// died during the outage is resumed once its record has expired.
import type { Context } from './context.ts';
import type { Dependency } from './dependencies.ts';
import { getPause } from './pause.ts';
import type { Queues } from './queues.ts';

type PausableQueue = 'submit' | 'results';

/** Which queues each dependency's outage pauses (Redis holds the pause itself, so it pauses none). */
export const PAUSED_BY: Record<Dependency, readonly PausableQueue[]> = { redis: [], s3: ['submit', 'results'], fal: ['submit'] };

export function pauseQueuesDuringOutages(ctx: Pick<Context, 'dependencies' | 'queues' | 'redis' | 'logger'>): void {
  ctx.dependencies.onChange({
    async onDown(dep) {
      for (const q of PAUSED_BY[dep]) await ctx.queues[q].pause();
    },
    async onUp(dep) {
      if (PAUSED_BY[dep].length) await resumeUnheldQueues(ctx);
    },
  });
}

/** Resumes each pausable queue that is paused while nothing holds it; returns the queues resumed. */
export async function resumeUnheldQueues(ctx: Pick<Context, 'dependencies' | 'queues' | 'redis' | 'logger'>): Promise<PausableQueue[]> {
  const outages = await ctx.dependencies.outages();
  const authPause = await getPause(ctx);
  const resumed: PausableQueue[] = [];
  for (const q of ['submit', 'results'] as const) {
    const held = outages.some((o) => PAUSED_BY[o.dependency].includes(q)) || (q === 'submit' && authPause !== undefined);
    if (held || !(await (ctx.queues as Queues)[q].isPaused())) continue;
    await ctx.queues[q].resume();
    resumed.push(q);
  }
  return resumed;
}
