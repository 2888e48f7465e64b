// Figure 8: figure 3's rows/s with 1, 2 and 4 worker processes sharing one Redis (and one webhook
// receiver), to show where the limit is on this machine.
import { runAlone, type Figure } from './lib/figure.ts';
import { round } from './lib/stats.ts';
import { serviceCpuMs, throughputRun } from './lib/throughput.ts';

export const figure: Figure = {
  id: 'scale-out',
  title: '8. Scale-out: 1, 2 and 4 worker processes',
  method: 'the figure 3 run with 1, 2 and 4 `portrait-batch worker` processes sharing one Redis, one webhook receiver, one emulator and s3rver; rows/s from `startRun` to the report written, CPU per process from /proc.',
  targets: [],
  async run(ctx) {
    const rows = ctx.quick ? 500 : 5000;
    const lines = [
      '| worker processes | rows/s | service CPU ms/row | worker CPU ms/row | emulator + s3rver + redis CPU ms/row |',
      '| ---: | ---: | ---: | ---: | ---: |',
    ];
    const rates: number[] = [];
    for (const workers of [1, 2, 4]) {
      const r = await throughputRun(ctx, rows, workers);
      rates.push(r.completed / r.seconds);
      const others = (r.cpuMs.emulator ?? 0) + (r.cpuMs.s3 ?? 0) + (r.cpuMs.redis ?? 0);
      lines.push(`| ${workers} | ${round(r.completed / r.seconds, 1)} | ${round(serviceCpuMs(r) / r.completed, 2)} | ${round((r.cpuMs.worker ?? 0) / r.completed, 2)} | ${round(others / r.completed, 2)} |`);
    }
    return {
      json: {},
      table: lines.join('\n'),
      setup: `${rows} rows per run; everything else as in figure 3.`,
      notes: [`Speed-up over one worker process: ×${round(rates[1]! / rates[0]!, 2)} with 2, ×${round(rates[2]! / rates[0]!, 2)} with 4.`],
    };
  },
};

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
