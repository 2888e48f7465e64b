// The script a user would write instead of this service: p-limit(C) around fal.subscribe (the official
// client, defaults: it polls status every 500 ms), then each image downloaded and put to S3 with the
// AWS SDK. Resumable the simple way: a row whose first image is already in S3 is skipped, so after a
// crash the user reruns it. It keeps nothing else: no record of what was submitted.
//   FAL_QUEUE_URL=… FAL_KEY=… S3_ENDPOINT=… S3_BUCKET=… CONCURRENCY=8 node --import tsx bench/baseline.ts manifest.csv
// The manifest is the bench's (id,face_url). Progress goes over IPC when there is a parent.
import { readFileSync } from 'node:fs';
import { HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { createFalClient } from '@fal-ai/client';
import { parse } from 'csv-parse/sync';
import pLimit from 'p-limit';
import { DEFAULT_ENDPOINT, FAL_QUEUE_HOST } from '../src/core/config.ts';

const manifest = process.argv[2];
if (!manifest) {
  process.stderr.write('usage: baseline.ts manifest.csv\n');
  process.exit(2);
}
const env = (name: string) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is required`);
  return v;
};
const queueUrl = env('FAL_QUEUE_URL').replace(/\/+$/, '');
const bucket = env('S3_BUCKET');
const concurrency = Number(process.env.CONCURRENCY ?? 8);

// The same FAL_QUEUE_URL mechanism as the service (src/core/fal.ts): rewrite queue.fal.run; nothing else changed.
const fal = createFalClient({
  credentials: env('FAL_KEY'),
  suppressLocalCredentialsWarning: true,
  requestMiddleware: async (req) => ({ ...req, url: req.url.startsWith(FAL_QUEUE_HOST) ? queueUrl + req.url.slice(FAL_QUEUE_HOST.length) : req.url }),
});
const s3 = new S3Client({
  region: process.env.S3_REGION ?? 'us-east-1',
  endpoint: process.env.S3_ENDPOINT,
  forcePathStyle: true,
  requestChecksumCalculation: 'WHEN_REQUIRED',
  responseChecksumValidation: 'WHEN_REQUIRED',
});

const keyOf = (id: string, n: number) => `baseline/${id}/${n}.png`;

async function exists(key: string): Promise<boolean> {
  try {
    await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return true;
  } catch {
    return false;
  }
}

async function processRow(id: string, faceUrl: string): Promise<void> {
  if (await exists(keyOf(id, 0))) return;
  const result = await fal.subscribe(DEFAULT_ENDPOINT, { input: { image_urls: [faceUrl] } });
  const images = (result.data as { images?: { url: string }[] }).images ?? [];
  for (const [n, img] of images.entries()) {
    const res = await fetch(img.url);
    if (!res.ok) throw new Error(`download ${img.url}: ${res.status}`);
    const body = Buffer.from(await res.arrayBuffer());
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: keyOf(id, n), Body: body, ContentType: res.headers.get('content-type') ?? 'image/png' }));
  }
}

const limit = pLimit(concurrency);
let done = 0;
let failed = 0;
const report = () => process.send?.({ done, failed });
const rows = parse(readFileSync(manifest), { columns: true }) as { id: string; face_url: string }[];
process.send?.({ done, failed, startedAt: Date.now() });
await Promise.all(
  rows.map((rec) =>
    limit(async () => {
      try {
        await processRow(rec.id, rec.face_url);
        done++;
      } catch (err) {
        failed++;
        process.stderr.write(`row ${rec.id} failed: ${(err as Error).message}\n`);
      }
      report();
    }),
  ),
);
const finished = { done, failed, finishedAt: Date.now() };
if (process.send) process.send(finished, () => process.exit(0));
else {
  process.stderr.write(`${done} rows done, ${failed} failed\n`);
  process.exit(0);
}
