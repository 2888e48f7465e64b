// The queues an outage pauses, globally (every worker process), as the auth pause does: while S3 or
// fal is down nothing new is submitted (fal could not take it, or its result could not be stored).
// Result jobs still run while S3 is down: each records its result (the row is `storing`, so its
// deadline counts from there) and then waits for S3 without trying it (store.ts, waitOutOutage). A queue is resumed only when nothing holds it any more — no outage
// recorded for a dependency that pauses it, no auth pause — so one outage ending never lifts another's
// pause. The reconciler calls resumeUnheldQueues every sweep too: a queue paused by a process that
// died during the outage is resumed once its record has expired.
import type { Context } from './context.ts';
import type { Dependency } from './dependencies.ts';
import { getPause } from './pause.ts';
import type { Queues } from './queues.ts';

type PausableQueue = 'submit';

/** Which queues each dependency's outage pauses (Redis holds the pause itself, so it pauses none). */
export const PAUSED_BY: Record<Dependency, readonly PausableQueue[]> = { redis: [], s3: ['submit'], fal: ['submit'] };

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
  const resumed: PausableQueue[] = [];
  for (const q of ['submit'] as const) {
    // Paused first, holds second: an outage is recorded before its pause, so a pause seen here is
    // never one whose hold is not yet visible.
    if (!(await (ctx.queues as Queues)[q].isPaused())) continue;
    const outages = await ctx.dependencies.outages();
    const held = outages.some((o) => PAUSED_BY[o.dependency].includes(q)) || (q === 'submit' && (await getPause(ctx)) !== undefined);
    if (held) continue;
    await ctx.queues[q].resume();
    resumed.push(q);
  }
  return resumed;
}
