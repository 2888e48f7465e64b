// Figure 6: Redis footprint — bytes per completed row after a run (INFO memory used_memory, after −
// before, on a Redis of the run's own) and the peak during it.
import { runAlone, type Figure } from './lib/figure.ts';
import { round } from './lib/stats.ts';
import { throughputRun } from './lib/throughput.ts';

export const figure: Figure = {
  id: 'redis',
  title: '6. Redis footprint',
  method:
    "`INFO memory` used_memory of the run's own redis-server, sampled every 200 ms from the bench: before `startRun`, the peak, and once the run is finished (report written). Bytes per completed row = (after − before) / completed rows: what a finished run leaves behind (request→row mappings kept an hour, BullMQ's bounded lists of finished jobs).",
  targets: [{ key: 'redisBytesPerCompletedRow', label: 'Redis bytes per completed row', test: (v) => v <= 300, text: '≤ 300' }],
  async run(ctx) {
    const rows = ctx.quick ? 500 : 100_000;
    const r = await throughputRun(ctx, rows);
    const m = r.redis!;
    const perRow = (m.after - m.before) / r.completed;
    const mib = (b: number) => round(b / 2 ** 20, 1);
    const table = [
      '| rows completed | before | peak | after | bytes per completed row |',
      '| ---: | ---: | ---: | ---: | ---: |',
      `| ${r.completed}/${r.rows} | ${mib(m.before)} MiB | ${mib(m.peak)} MiB | ${mib(m.after)} MiB | **${Math.round(perRow)}** |`,
    ].join('\n');
    return {
      json: { redisBytesPerCompletedRow: Math.round(perRow) },
      table,
      setup: `${rows} rows through the figure 3 set-up (zero-latency emulator, RUN_WINDOW=2000).`,
    };
  },
};

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
