// Figure 10: a run's dashboard page at 10^6 rows — how long `/ui/runs/<id>` takes to answer for a
// finished run of 10^6 rows (first page, a page deep inside, a status filter), and what it read from S3.
import { mkdtemp, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { startEmbeddedService } from '../src/local/embedded.ts';
import { runAlone, type Figure } from './lib/figure.ts';
import { percentile, round } from './lib/stats.ts';

const VIEWS_EACH = 20;

export const figure: Figure = {
  id: 'dashboard-page',
  title: "10. A run's dashboard page at 10^6 rows",
  method:
    'The embedded stack in this process (redis-server, s3rver, the emulator; no fal call is made: every row is rejected, so the run finishes as fast as it is read). A manifest of N rows whose faces are refused (`javascript:x`) is run to the end (report and report index written), then the run\'s page is fetched with the bearer token, one request at a time, ' +
    `${VIEWS_EACH} times each, round-robin after one warm-up view each: page 1, the middle page, the last page, and the middle page of the \`rejected\` filter. Latency = fetch start to the whole HTML read. The page reads the report index's entries and the page's report lines by byte range (src/worker/reportIndex.ts); before, it parsed the whole report.csv.`,
  targets: [{ key: 'dashboardPageP99Ms', label: "Dashboard run page p99 at 10^6 rows, ms", test: (v) => v < 300, text: '< 300' }],
  async run(ctx) {
    const rows = ctx.quick ? 20_000 : 1_000_000;
    const dir = await mkdtemp(join(ctx.dir, 'dashboard-'));
    const svc = await startEmbeddedService({ dataDir: dir, env: { LOG_LEVEL: 'warn', RUN_WINDOW: '2000' }, persistentRedis: false, name: 'bench-dashboard', admin: true });
    try {
      const manifest = join(dir, 'rejected.csv');
      const lines = ['id,face_url'];
      for (let i = 0; i < rows; i++) lines.push(`r${i},javascript:x`);
      await writeFile(manifest, `${lines.join('\n')}\n`);
      const t0 = Date.now();
      const { runId } = await svc.pb.startRun(manifest);
      const run = await svc.pb.waitForRun(runId, { timeoutMs: 3 * 3600_000 });
      const runSeconds = round((Date.now() - t0) / 1000, 1);
      ctx.log(`run ${runId}: ${run.rejected} rejected rows, finished in ${runSeconds} s`);
      let reportBytes = 0;
      for await (const o of svc.pb.context.storage.list(`runs/${runId}/report.csv`)) reportBytes = o.size;
      const pages = Math.ceil(rows / 24);
      const mid = Math.ceil(pages / 2);
      const views: Record<string, string> = { first: '', middle: `?page=${mid}`, last: `?page=${pages}`, 'rejected, middle': `?status=rejected&page=${mid}` };
      const token = svc.stack.env.DASHBOARD_TOKEN!;
      const timings: Record<string, number[]> = Object.fromEntries(Object.keys(views).map((n) => [n, []]));
      const viewOnce = async (name: string, query: string) => {
        const s = performance.now();
        const res = await fetch(`${svc.admin!.url}/ui/runs/${runId}${query}`, { headers: { authorization: `Bearer ${token}` } });
        const html = await res.text();
        if (res.status !== 200 || !html.includes('figure class="card')) throw new Error(`${name}: ${res.status} ${html.slice(0, 200)}`);
        return performance.now() - s;
      };
      // Warm-up (not counted): the connection, the JIT, the run's index.json remembered.
      for (const [name, query] of Object.entries(views)) await viewOnce(name, query);
      // Round-robin, so a burst of other work on the machine falls on every view alike.
      for (let i = 0; i < VIEWS_EACH; i++) {
        for (const [name, query] of Object.entries(views)) timings[name]!.push(await viewOnce(name, query));
      }
      const all = Object.values(timings).flat();
      const table = [
        '| view | p50 ms | p99 ms | max ms |',
        '| --- | ---: | ---: | ---: |',
        ...Object.entries(timings).map(([name, ts]) => `| ${name} | ${round(percentile(ts, 50), 1)} | ${round(percentile(ts, 99), 1)} | ${round(Math.max(...ts), 1)} |`),
        `| **all ${all.length} views** | ${round(percentile(all, 50), 1)} | **${round(percentile(all, 99), 1)}** | ${round(Math.max(...all), 1)} |`,
      ].join('\n');
      return {
        json: { dashboardPageP99Ms: round(percentile(all, 99), 1) },
        table,
        setup: `${rows} rows (report.csv ${round(reportBytes / 2 ** 20, 1)} MiB; the run took ${runSeconds} s to finish), ${VIEWS_EACH} views each, one at a time, on the admin listener of the process that ran it.`,
      };
    } finally {
      await svc.stop();
    }
  },
};

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
