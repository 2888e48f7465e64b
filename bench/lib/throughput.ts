// The service flat out: an emulator at zero latency with many slots and small images, the service's
// stages wide open, so what is measured is the service's own cost per row. Figures 3, 6 and 8 (and the
// profile) draw on these runs; runs with the same parameters are shared.
import type { BenchContext } from './figure.ts';
import { runService, type ServiceRunResult } from './runs.ts';
import { startEmulatorProcess } from './stack.ts';

export const THROUGHPUT_SETTINGS: Record<string, string> = {
  FAL_CONCURRENCY: '512',
  SUBMIT_CONCURRENCY: '32',
  STORE_CONCURRENCY: '32',
  SUBMIT_RATE_PER_SECOND: '100000',
  RUN_WINDOW: '2000',
};

export function throughputRun(ctx: BenchContext, rows: number, workers = 1, workerNodeArgs?: string[]): Promise<ServiceRunResult> {
  const make = async () => {
    const stack = await ctx.stack();
    const emulator = await startEmulatorProcess({ slots: 512, latencyMs: { min: 0, max: 0 } });
    try {
      return await runService({ stack, emulator, rows, workers, env: THROUGHPUT_SETTINGS, sampleRedis: true, workerNodeArgs, log: ctx.log });
    } finally {
      await emulator.stop();
    }
  };
  return workerNodeArgs ? make() : ctx.memo(`throughput:${rows}:${workers}`, make);
}

export const serviceCpuMs = (r: ServiceRunResult) => (r.cpuMs.webhook ?? 0) + (r.cpuMs.worker ?? 0);
