// The measured process of figure 5 (bench/ingest.ts): reads one manifest file the way the producer
// does and prints {rows, seconds, startRssMb, peakRssMb}. It loads the reader and nothing of the bench
// (its stack, servers, S3 and Redis clients), so its memory is the runtime, tsx and the reader's own.
import { readManifest } from '../../src/manifest/index.ts';
import { manifestSource } from '../../src/manifest/source.ts';

const path = process.argv[2];
if (!path) throw new Error('usage: node --import tsx bench/lib/ingestReader.ts <manifest.csv>');
const startRssMb = process.memoryUsage().rss / 2 ** 20;
const t0 = performance.now();
let rows = 0;
for await (const _ of readManifest(await manifestSource(path).open(), {})) rows++;
const seconds = (performance.now() - t0) / 1000;
process.stdout.write(`${JSON.stringify({ rows, seconds, startRssMb, peakRssMb: process.resourceUsage().maxRSS / 1024 })}\n`);
