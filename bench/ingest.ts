// Figure 5: ingest — manifest streaming + validation (the producer's reader), rows/s and peak RSS at
// 10^4, 10^5 and 10^6 rows, each size in a fresh child process (peak RSS from process.resourceUsage()).
// As in production: the manifest is a file the reader streams as bytes (manifestSource().open(), the
// producer's own path), in a process running the TypeScript through tsx like bin/portrait-batch.js
// and loading only the reader (bench/lib/ingestReader.ts).
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { runAlone, type Figure } from './lib/figure.ts';
import { round } from './lib/stats.ts';

const READER = fileURLToPath(new URL('./lib/ingestReader.ts', import.meta.url));

function* manifestLines(n: number, withIds: boolean) {
  yield `${withIds ? 'id,' : ''}face_url,prompt,image_size,num_images,seed,team\n`;
  for (let i = 0; i < n; i++) {
    yield `${withIds ? `row-${i},` : ''}https://v3.fal.media/files/face-${i % 97}.png,"a portrait, full body",portrait_4_3,1,${i},team-${i % 7}\n`;
  }
}

/** Writes the generated manifest to a file (before the measured process starts). */
async function writeManifestFile(path: string, n: number, withIds: boolean): Promise<void> {
  const out = createWriteStream(path);
  let buf = '';
  for (const line of manifestLines(n, withIds)) {
    buf += line;
    if (buf.length < 1 << 16) continue;
    if (!out.write(buf)) await once(out, 'drain');
    buf = '';
  }
  out.end(buf);
  await once(out, 'finish');
}

interface IngestResult {
  rows: number;
  seconds: number;
  /** RSS once the modules are loaded, before the first row. */
  startRssMb: number;
  peakRssMb: number;
}

async function measure(dir: string, n: number, withIds: boolean): Promise<IngestResult> {
  const path = join(dir, `ingest-${n}-${withIds ? 'ids' : 'no-ids'}.csv`);
  await writeManifestFile(path, n, withIds);
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', READER, path], { maxBuffer: 1 << 20 }).finally(() => rm(path, { force: true }));
  return JSON.parse(stdout.trim().split('\n').pop()!) as IngestResult;
}

export const figure: Figure = {
  id: 'ingest',
  title: '5. Ingest: manifest streaming and validation',
  method:
    "the producer's manifest reader (`readManifest`: CSV parsing, every row's checks) over a manifest file of generated rows (an https face URL, a prompt, image_size, num_images, seed and a passthrough column) streamed from disk as the producer opens it (`manifestSource().open()`), each size in a fresh Node process running through tsx as `bin/portrait-batch.js` does; rows/s over the whole read, peak RSS = the process's maxRSS (the runtime and modules included).",
  targets: [
    { key: 'ingestRowsPerSec', label: 'ingest rows/s (largest size)', test: (v) => v >= 100_000, text: '≥ 100,000' },
    { key: 'ingestPeakRssMb', label: 'ingest peak RSS MB (largest of all sizes)', test: (v) => v < 150, text: '< 150, flat' },
  ],
  async run(ctx) {
    const sizes = ctx.quick ? [10_000, 100_000] : [10_000, 100_000, 1_000_000];
    const lines = ['| rows | id column | seconds | rows/s | RSS before the first row | peak RSS |', '| ---: | --- | ---: | ---: | ---: | ---: |'];
    const line = (n: number, ids: string, r: IngestResult) =>
      `| ${n.toLocaleString('en')} | ${ids} | ${round(r.seconds, 2)} | ${Math.round(r.rows / r.seconds).toLocaleString('en')} | ${Math.round(r.startRssMb)} MB | ${Math.round(r.peakRssMb)} MB |`;
    const results: IngestResult[] = [];
    for (const n of sizes) {
      const r = await measure(ctx.dir, n, false);
      results.push(r);
      lines.push(line(n, 'no', r));
    }
    if (!ctx.quick) {
      const n = sizes[sizes.length - 1]!;
      lines.push(line(n, 'yes (ids kept to refuse repeats)', await measure(ctx.dir, n, true)));
    }
    const last = results[results.length - 1]!;
    return {
      json: { ingestRowsPerSec: Math.round(last.rows / last.seconds), ingestPeakRssMb: Math.round(Math.max(...results.map((r) => r.peakRssMb))) },
      table: lines.join('\n'),
      setup: `${sizes.map((s) => s.toLocaleString('en')).join(', ')} rows without an id column${ctx.quick ? '' : '; the largest also with one'}.`,
    };
  },
};

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
