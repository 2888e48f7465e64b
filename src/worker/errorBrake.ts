// Keeps BullMQ workers from spinning on errors. BullMQ fetches the next job again at once after an
// error it does not take for a connection error (a MISCONF "disk full" Redis refusing writes, a
// failing script): a hot loop writing a log line per turn. Here every `error` event holds its worker
// (a local pause) for a backoff that doubles while errors keep coming, and an outage of Redis holds
// every worker until the probe sees Redis take writes again. Errors are said through the dependency
// tracker: a Redis outage once, any other error at most once a minute with a count.
import type { Worker } from 'bullmq';
import type { Context } from '../core/context.ts';
import { DependencyError, isRedisOutage } from '../core/dependencies.ts';
import { backoffDelay } from '../core/policy.ts';

type Hold = 'brake' | 'redis';

/** BullMQ's errors for a job whose lock ran out (not renewed in time, or taken over). */
const LOCK_LOST = /could not renew lock for job|Missing lock for job/;

export interface ErrorBrake {
  /** Stops every timer; workers are left as they are (they are being closed). */
  close(): void;
}

export function brakeOnErrors(ctx: Context, workers: Worker[]): ErrorBrake {
  const { errorBrake } = ctx.policy.dependencies;
  let closed = false;
  const holds = new Map<Worker, Set<Hold>>(workers.map((w) => [w, new Set()]));
  const brakes = new Map<Worker, { streak: number; lastAt: number; timer?: ReturnType<typeof setTimeout> }>();

  const hold = (w: Worker, why: Hold) => {
    const set = holds.get(w)!;
    const was = set.size;
    set.add(why);
    if (!was && !closed) void w.pause(true).catch(() => undefined);
  };
  const release = (w: Worker, why: Hold) => {
    const set = holds.get(w)!;
    if (!set.delete(why) || set.size || closed || w.closing) return;
    w.resume();
  };

  const brake = (w: Worker) => {
    const now = Date.now();
    const b = brakes.get(w) ?? { streak: 0, lastAt: 0 };
    brakes.set(w, b);
    if (b.timer) return; // already held: errors of work still finishing add nothing
    // Errors within twice the last wait continue a streak; a quiet spell starts again from the base.
    b.streak = now - b.lastAt <= 2 * backoffDelay(errorBrake, b.streak + 1, () => 1) ? b.streak + 1 : 1;
    b.lastAt = now;
    hold(w, 'brake');
    b.timer = setTimeout(() => {
      b.timer = undefined;
      b.lastAt = Date.now();
      release(w, 'brake');
    }, backoffDelay(errorBrake, b.streak));
    b.timer.unref?.();
  };

  for (const w of workers) {
    w.on('error', (err) => {
      if (isRedisOutage(err, true)) ctx.dependencies.down('redis', err);
      // A job lock lost during an outage (or just after it) is part of that outage: its job runs again
      // (stalled-job recovery) and the row state machine keeps the outcome single.
      else if (LOCK_LOST.test(String(err?.message)) && ctx.dependencies.inOutageAftermath()) ctx.logger.debug({ queue: w.name, err: err.message }, 'job lock lost during an outage');
      else ctx.dependencies.error('worker error', err, { queue: w.name });
      brake(w);
    });
  }
  ctx.dependencies.onChange({
    onDown(dep) {
      if (dep === 'redis') for (const w of workers) hold(w, 'redis');
    },
    onUp(dep) {
      if (dep === 'redis') for (const w of workers) release(w, 'redis');
    },
  });
  if (ctx.dependencies.isDown('redis')) for (const w of workers) hold(w, 'redis');

  return {
    close() {
      closed = true;
      for (const b of brakes.values()) clearTimeout(b.timer);
    },
  };
}

/** Whether a job's failure was an outage the tracker already said (not worth a line per job). */
export function isOutageFailure(err: Error): boolean {
  return err instanceof DependencyError || isRedisOutage(err);
}
