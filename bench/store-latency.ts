// Figure 7: store latency — from fal's completion of a request (the emulator's completedAt) to its row
// completed with its image in S3 (the row's finished_at in its metadata), at a steady 50 rows/s.
import { runLayout } from '../src/core/layout.ts';
import type { RowMeta } from '../src/worker/flush.ts';
import { runAlone, type Figure } from './lib/figure.ts';
import { runService } from './lib/runs.ts';
import { percentile, round } from './lib/stats.ts';
import { startEmulatorProcess } from './lib/stack.ts';

const RATE = 50;
const GENERATION_MS = 1000;

export const figure: Figure = {
  id: 'store-latency',
  title: '7. Store latency',
  method: `submissions paced at ${RATE}/s by the service's own limiter (SUBMIT_RATE_PER_SECOND=${RATE}) into an emulator with enough slots and a fixed ${GENERATION_MS / 1000} s generation, so results arrive at a steady ${RATE}/s. Per row: its metadata's \`finished_at\` (the row completed, images in S3) minus the emulator's \`completedAt\` of its request (GET /_emulator/requests/{id}); one clock, one machine. The path measured: the webhook sent, verified and recorded, the result job picked up, the image downloaded and put to S3, the row completed.`,
  targets: [{ key: 'storeLatencyP99Ms', label: 'store latency p99 ms', test: (v) => v < 1000, text: '< 1,000' }],
  async run(ctx) {
    const rows = ctx.quick ? 250 : 1500;
    const stack = await ctx.stack();
    const emulator = await startEmulatorProcess({ slots: 256, latencyMs: { min: GENERATION_MS, max: GENERATION_MS } });
    const latencies: number[] = [];
    try {
      await runService({
        stack,
        emulator,
        rows,
        env: { SUBMIT_RATE_PER_SECOND: String(RATE), SUBMIT_CONCURRENCY: '16', STORE_CONCURRENCY: '16', FAL_CONCURRENCY: '256' },
        log: ctx.log,
        inspect: async (pb, runId) => {
          const layout = runLayout(pb.config.S3_PREFIX, runId);
          const keys: string[] = [];
          for await (const o of pb.context.storage.list(`${layout.base}meta/`)) keys.push(o.key);
          await Promise.all(
            keys.map(async (key) => {
              const meta = await pb.context.storage.getJson<RowMeta>(key);
              if (!meta || meta.status !== 'completed' || !meta.request_id || !meta.timings.finished_at) return;
              const req = await emulator.request(meta.request_id);
              if (req.completedAt) latencies.push(Date.parse(meta.timings.finished_at) - req.completedAt);
            }),
          );
        },
      });
    } finally {
      await emulator.stop();
    }
    const p = (q: number) => Math.round(percentile(latencies, q));
    const table = [
      '| rows measured | p50 ms | p90 ms | p99 ms | max ms |',
      '| ---: | ---: | ---: | ---: | ---: |',
      `| ${latencies.length}/${rows} | ${p(50)} | ${p(90)} | **${p(99)}** | ${p(100)} |`,
    ].join('\n');
    return {
      json: { storeLatencyP99Ms: p(99) },
      table,
      setup: `${rows} rows at ${RATE} rows/s; emulator 256 slots, ${GENERATION_MS / 1000} s generation; SUBMIT_CONCURRENCY=STORE_CONCURRENCY=16; one webhook and one worker process.`,
      notes: [`Mean ${round(latencies.reduce((a, b) => a + b, 0) / Math.max(1, latencies.length), 0)} ms.`],
    };
  },
};

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
