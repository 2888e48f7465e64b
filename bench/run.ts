// Benchmarks (numbers go to bench/RESULTS.md; tests never assert timings).
//   npm run bench -- parse 1000000     manifest validation: rows/s and peak RSS for N rows (parse-ids: with an id column)
//   npm run bench -- pipeline 2000     end to end on the embedded stack: rows/s, Redis peak memory
//   npm run bench -- window 20000      Redis memory while a large run streams through the window
import { Readable } from 'node:stream';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEmbeddedService } from '../src/local/embedded.ts';
import { readManifest } from '../src/manifest/index.ts';

const [, , what = 'parse', nArg] = process.argv;

function* manifestLines(n: number, withIds: boolean) {
  yield `${withIds ? 'id,' : ''}face_url,prompt,image_size,num_images,seed,team\n`;
  for (let i = 0; i < n; i++) {
    yield `${withIds ? `row-${i},` : ''}https://v3.fal.media/files/face-${i % 97}.png,"a portrait, full body",portrait_4_3,1,${i},team-${i % 7}\n`;
  }
}

async function benchParse(n: number, withIds: boolean) {
  let peak = 0;
  const t0 = performance.now();
  let rows = 0;
  for await (const _ of readManifest(Readable.from(manifestLines(n, withIds)), {})) {
    if (++rows % 50_000 === 0) peak = Math.max(peak, process.memoryUsage().rss);
  }
  const secs = (performance.now() - t0) / 1000;
  peak = Math.max(peak, process.memoryUsage().rss);
  return { bench: withIds ? 'parse (with id column)' : 'parse (no id column)', rows, seconds: +secs.toFixed(2), rowsPerSecond: Math.round(rows / secs), peakRssMiB: Math.round(peak / 2 ** 20) };
}

async function benchPipeline(n: number, window: number) {
  const dir = await mkdtemp(join(tmpdir(), 'pb-bench-'));
  const { pb, stop } = await startEmbeddedService({
    name: 'bench',
    policy: { waitPollMs: 200 },
    dataDir: dir,
    env: {},
    persistentRedis: false,
    defaults: { LOG_LEVEL: 'silent', RUN_WINDOW: String(window), SUBMIT_CONCURRENCY: '32', STORE_CONCURRENCY: '32', SUBMIT_RATE_PER_SECOND: '10000', RECONCILE_INTERVAL_MS: '2000' },
    emulator: { sizeScale: 0.0625, latencyMs: { min: 0, max: 0 }, slots: 64 },
  });
  const ctx = pb.context;
  try {
    const face = `data:image/png;base64,${Buffer.from(await (await import('sharp')).default({ create: { width: 64, height: 64, channels: 3, background: '#c96' } }).png().toBuffer()).toString('base64')}`;
    const lines = ['id,face_url'];
    for (let i = 0; i < n; i++) lines.push(`b${i},"${face}"`);
    const manifest = join(dir, 'bench.csv');
    await writeFile(manifest, `${lines.join('\n')}\n`);
    let peakRedis = 0;
    const sampler = setInterval(async () => {
      const info = await ctx.redis.info('memory');
      peakRedis = Math.max(peakRedis, Number(/used_memory:(\d+)/.exec(info)?.[1] ?? 0));
    }, 250);
    const t0 = performance.now();
    const { runId } = await pb.startRun(manifest);
    const run = await pb.waitForRun(runId);
    const secs = (performance.now() - t0) / 1000;
    clearInterval(sampler);
    return {
      bench: 'pipeline',
      rows: n,
      window,
      completed: run.completed,
      seconds: +secs.toFixed(1),
      rowsPerSecond: +(n / secs).toFixed(1),
      redisPeakMiB: +(peakRedis / 2 ** 20).toFixed(1),
      workerRssMiB: Math.round(process.memoryUsage().rss / 2 ** 20),
    };
  } finally {
    await stop();
    await rm(dir, { recursive: true, force: true });
  }
}

const n = Number(nArg ?? (what.startsWith('parse') ? 1_000_000 : 2000));
const result = what === 'parse' || what === 'parse-ids' ? await benchParse(n, what === 'parse-ids') : await benchPipeline(n, what === 'window' ? 500 : 1000);
process.stdout.write(`${JSON.stringify(result)}\n`);
process.exit(0);
