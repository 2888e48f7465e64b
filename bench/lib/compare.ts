// The service against the baseline script on equal terms: each against an emulator of its own with C
// slots and a fixed generation time, the same rows, the same concurrency. Runs are memoized by their
// parameters, so figures 1 and 2 share them where their sizes agree (--quick).
import type { EmulatorFaults, EmulatorStats } from '../../src/emulator/index.ts';
import type { BenchContext } from './figure.ts';
import { allFalCalls, runBaseline, runService, type BaselineRunResult, type ServiceRunResult } from './runs.ts';
import { startEmulatorProcess } from './stack.ts';

/** fal's concurrency slots in the comparison, and the service's and the baseline's concurrency. */
export const SLOTS = 8;
export const GENERATION_MS = 2000;

/** Figure 2's faults: submit 5xx, lost requests, dropped webhooks (plus one SIGKILL mid-run). */
export const COMPARISON_FAULTS: EmulatorFaults = { submitErrorRate: 0.05, lostRequestRate: 0.03, webhookDropRate: 0.2 };

export type Mode = 'webhook' | 'poll' | 'baseline';

export interface ComparisonRun {
  mode: Mode;
  rows: number;
  completed: number;
  seconds: number;
  calls: EmulatorStats;
  kills: number;
  service?: ServiceRunResult;
  baseline?: BaselineRunResult;
}

/** The service's settings for the comparison: C at once, on fal and in each stage. */
export function serviceSettings(mode: 'webhook' | 'poll', faults: boolean): Record<string, string> {
  return {
    FAL_CONCURRENCY: String(SLOTS),
    SUBMIT_CONCURRENCY: String(SLOTS),
    STORE_CONCURRENCY: String(SLOTS),
    ...(mode === 'poll' ? { RESULT_DELIVERY: 'poll' } : {}),
    // With faults: a missing webhook is looked for after 3 generation times, and a killed worker's
    // jobs are taken over after 5 s (defaults: 5 min and 30 s, made for fal's minutes-long queues).
    ...(faults ? { RECONCILE_INTERVAL_MS: '1000', RECONCILE_GRACE_MS: String(3 * GENERATION_MS), JOB_LOCK_MS: '5000' } : {}),
  };
}

/** `warmUpRows`: the service first runs that many rows, unmeasured, on the same Redis (a service that has run before). */
export function comparisonRun(ctx: BenchContext, mode: Mode, rows: number, faults: boolean, warmUpRows = 0): Promise<ComparisonRun> {
  return ctx.memo(`compare:${mode}:${rows}:${faults}:${warmUpRows}`, async () => {
    const stack = await ctx.stack();
    const emulator = await startEmulatorProcess({ slots: SLOTS, latencyMs: { min: GENERATION_MS, max: GENERATION_MS }, faults: faults ? COMPARISON_FAULTS : undefined });
    try {
      if (mode === 'baseline') {
        const b = await runBaseline({ stack, emulator, rows, concurrency: SLOTS, killAt: faults ? 0.5 : undefined, log: ctx.log });
        return { mode, rows, completed: b.completed, seconds: b.seconds, calls: b.calls, kills: b.kills, baseline: b };
      }
      const s = await runService({
        stack,
        emulator,
        rows,
        env: serviceSettings(mode, faults),
        killWorkerAt: faults ? 0.5 : undefined,
        warmUpRows,
        audit: faults,
        log: ctx.log,
      });
      return { mode, rows, completed: s.completed, seconds: s.seconds, calls: s.calls, kills: s.kills, service: s };
    } finally {
      await emulator.stop();
    }
  });
}

/** fal calls per stored image (one image a row). */
export const callsPerImage = (r: ComparisonRun) => (r.completed ? allFalCalls(r.calls) / r.completed : NaN);

/** Paid generations whose images were never stored: billed requests beyond one per completed row. */
export const extraPaid = (r: ComparisonRun) => Math.max(0, r.calls.billed - r.completed);
