// Figure 3: the service's own CPU per row (webhook receiver and worker processes only, from /proc)
// against an emulator at zero latency with small images, and the rows/s this machine sustains.
import { runAlone, type Figure } from './lib/figure.ts';
import { round } from './lib/stats.ts';
import { serviceCpuMs, THROUGHPUT_SETTINGS, throughputRun } from './lib/throughput.ts';
import { cpus } from 'node:os';

export const figure: Figure = {
  id: 'service-cost',
  title: '3. Service cost: CPU per row and rows/s',
  method:
    'CPU time (utime + stime from /proc/<pid>/stat) of each process between `startRun` and the run finished (report written), divided by the rows. The webhook receiver and the worker (producer, submit, store, reconcile, finalize) are `portrait-batch webhook` and `portrait-batch worker` processes; the emulator (zero latency, small images), s3rver and redis-server run in processes of their own and are shown beside them, not counted.',
  targets: [{ key: 'serviceCpuMsPerRow', label: 'service CPU ms per row', test: (v) => v <= 3, text: '≤ 3' }],
  async run(ctx) {
    const rows = ctx.quick ? 500 : 10_000;
    const r = await throughputRun(ctx, rows);
    const per = (ms: number | undefined) => round((ms ?? 0) / r.completed, 2);
    const service = serviceCpuMs(r) / r.completed;
    const cores = cpus().length;
    const line = (what: string, seconds: number, c: Record<string, number>) => {
      const svc = ((c.webhook ?? 0) + (c.worker ?? 0)) / r.completed;
      return `| ${what} | ${r.completed}/${r.rows} | ${round(seconds, 1)} | ${round(r.completed / seconds, 1)} | **${round(svc, 2)}** | ${per(c.webhook)} | ${per(c.worker)} | ${per(c.emulator)} | ${per(c.s3)} | ${per(c.redis)} | ${Math.round((cores * 1000) / svc)} |`;
    };
    const table = [
      '| until | rows completed | seconds | rows/s | service CPU ms/row | webhook | worker | emulator | s3rver | redis | rows/s if the service had the machine alone |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...(r.rowsDone ? [line('every row finished', r.rowsDone.seconds, r.rowsDone.cpuMs)] : []),
      line('report written (the run finished)', r.seconds, r.cpuMs),
    ].join('\n');
    return {
      json: { serviceCpuMsPerRow: round(service, 2), serviceRowsPerSec: round(r.completed / r.seconds, 1) },
      table,
      setup: `${rows} rows, one 64×64 face, 1 image a row; emulator 512 slots at zero latency; service ${Object.entries(THROUGHPUT_SETTINGS).map(([k, v]) => `${k}=${v}`).join(', ')}; one webhook and one worker process.`,
      notes: [
        `rows/s is what this ${cores}-core machine did with everything on it (emulator, s3rver, Redis and the bench included); the last column is ${cores} × 1000 ms / service CPU ms per row: the rate the service's own CPU would allow on a machine of its own.`,
      ],
    };
  },
};

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
