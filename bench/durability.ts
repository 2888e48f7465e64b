// Figure 9: what the durable claim costs. The claim (the attempt recorded before fal is called) is
// durable only once it is on disk: `appendfsync always` fsyncs the AOF before Redis answers, `everysec`
// up to a second later (a host crash loses that second; see the README's "Never lose, never pay
// twice"). Measured two ways, the settings alternating so the machine's load falls on both alike:
// the figure-3 set-up (service CPU per row, rows/s, Redis's own CPU), and the claim alone (claimSubmit
// then recordSubmit on a fresh Redis, 32 at a time: the latency a submission waits for its claim).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { RowStore, type RowData } from '../src/core/rowState.ts';
import { startRedisServer } from '../src/local/redisServer.ts';
import { runAlone, type Figure } from './lib/figure.ts';
import { runService } from './lib/runs.ts';
import { startEmulatorProcess } from './lib/stack.ts';
import { round } from './lib/stats.ts';
import { THROUGHPUT_SETTINGS } from './lib/throughput.ts';

type Fsync = 'everysec' | 'always';
const SETTINGS: Fsync[] = ['everysec', 'always'];

const DATA: RowData = { faceUrl: 'https://faces.example/f.png', faceKind: 'http', input: { prompt: 'p' }, extra: {} };

/** ms per claim+record pair, and its p50/p99 latency, `n` pairs `concurrency` at a time. */
async function claimLatency(appendfsync: Fsync, n: number, concurrency: number): Promise<{ perPairMs: number; p50: number; p99: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'pb-durability-'));
  const server = await startRedisServer({ dir, appendfsync });
  const redis = new Redis(server.url);
  try {
    const rows = new RowStore(redis);
    const runId = 'durability';
    await rows.createRun({
      runId,
      manifest: 'm.csv',
      manifestKey: 'k',
      options: {},
      policy: { endpoint: 'e', maxAttempts: 3, deadlineMs: 60_000, queueDeadlineMs: 60_000, failureMinRows: 1000, failureRatio: 1, maxCost: null, pricePerMegapixel: 0.02, currency: 'USD' },
    });
    const lat: number[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        for (let i = next++; i < n; i = next++) {
          const s = performance.now();
          await rows.claimSubmit(runId, `r${i}`, i + 2, DATA);
          await rows.recordSubmit(runId, `r${i}`, 1, `req-${i}`, Date.now() + 60_000);
          lat.push(performance.now() - s);
        }
      }),
    );
    const total = performance.now() - t0;
    lat.sort((a, b) => a - b);
    return { perPairMs: total / n, p50: lat[Math.floor(lat.length * 0.5)]!, p99: lat[Math.floor(lat.length * 0.99)]! };
  } finally {
    await redis.quit();
    await server.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

export const figure: Figure = {
  id: 'durability',
  title: '11. The durable claim: `appendfsync always` against `everysec`',
  method:
    'The figure-3 set-up (`bench/lib/throughput.ts`: webhook and worker processes, an emulator at zero latency, CPU from /proc) with Redis keeping its AOF, fsynced `everysec` or `always`, runs alternating; and the claim alone: `claimSubmit` + `recordSubmit` pairs on a fresh redis-server, 32 at a time, wall time per pair and latency percentiles.',
  targets: [],
  async run(ctx) {
    const rows = ctx.quick ? 300 : 2000;
    const pairs = ctx.quick ? 2000 : 20_000;
    const rounds = ctx.quick ? 1 : 2;
    const service: { fsync: Fsync; svcMs: number; redisMs: number; rowsPerSec: number }[] = [];
    const claims: { fsync: Fsync; perPairMs: number; p50: number; p99: number }[] = [];
    for (let round_ = 0; round_ < rounds; round_++) {
      for (const fsync of SETTINGS) {
        claims.push({ fsync, ...(await claimLatency(fsync, pairs, 32)) });
        const stack = await ctx.stack();
        const emulator = await startEmulatorProcess({ slots: 512, latencyMs: { min: 0, max: 0 } });
        try {
          const r = await runService({ stack, emulator, rows, env: THROUGHPUT_SETTINGS, redisAppendfsync: fsync, log: ctx.log });
          service.push({
            fsync,
            svcMs: ((r.cpuMs.webhook ?? 0) + (r.cpuMs.worker ?? 0)) / r.completed,
            redisMs: (r.cpuMs.redis ?? 0) / r.completed,
            rowsPerSec: r.completed / r.seconds,
          });
        } finally {
          await emulator.stop();
        }
      }
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
    const table = [
      '| appendfsync | service CPU ms/row | redis CPU ms/row | rows/s | claim+record ms (32 at once, per pair) | claim+record p50 ms | p99 ms |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...service.map((s, i) => {
        const c = claims[i]!;
        return `| ${s.fsync} (run ${Math.floor(i / 2) + 1}) | ${round(s.svcMs, 2)} | ${round(s.redisMs, 2)} | ${round(s.rowsPerSec, 1)} | ${round(c.perPairMs, 3)} | ${round(c.p50, 2)} | ${round(c.p99, 2)} |`;
      }),
      ...SETTINGS.map((f) => {
        const s = service.filter((x) => x.fsync === f);
        const c = claims.filter((x) => x.fsync === f);
        return `| **${f}, mean** | **${round(mean(s.map((x) => x.svcMs)), 2)}** | ${round(mean(s.map((x) => x.redisMs)), 2)} | **${round(mean(s.map((x) => x.rowsPerSec)), 1)}** | ${round(mean(c.map((x) => x.perPairMs)), 3)} | ${round(mean(c.map((x) => x.p50)), 2)} | ${round(mean(c.map((x) => x.p99)), 2)} |`;
      }),
    ].join('\n');
    return {
      json: {},
      table,
      setup: `${rows} rows a service run (${Object.entries(THROUGHPUT_SETTINGS).map(([k, v]) => `${k}=${v}`).join(', ')}), ${pairs} claim pairs; ${rounds} round(s) of everysec then always.`,
      notes: [
        'Redis fsyncs once per turn of its event loop under `always`, for every client whose writes that turn made, so a claim waits for one fsync (a page-cache flush on this VM\'s disk) and concurrent claims share it.',
      ],
    };
  },
};

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
