// S3 access against the embedded S3 server: listing pages past 1000 keys, prefix deletes, presigning.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Storage } from '../src/core/s3.ts';
import { S3RVER_CREDENTIALS, startS3Server, type RunningS3 } from '../src/local/s3Server.ts';

let s3: RunningS3;
let dir: string;
let storage: Storage;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pb-s3-'));
  s3 = await startS3Server({ dir });
  for (const [k, v] of Object.entries(S3RVER_CREDENTIALS)) process.env[k] ??= v;
  storage = new Storage({ S3_BUCKET: 'pb-storage', S3_PREFIX: '', S3_ENDPOINT: s3.endpoint, S3_REGION: 'us-east-1', S3_FORCE_PATH_STYLE: true });
  await storage.ensureBucket();
});
after(async () => {
  await s3.close();
  await rm(dir, { recursive: true, force: true });
});

test('list pages through more than 1000 keys, in key order, within the prefix only', async () => {
  const keys = Array.from({ length: 1105 }, (_, i) => `many/${String(i).padStart(5, '0')}.txt`);
  for (let i = 0; i < keys.length; i += 50) await Promise.all(keys.slice(i, i + 50).map((k) => storage.upload(k, 'x', 'text/plain')));
  await storage.upload('other/a.txt', 'y', 'text/plain');
  const listed: string[] = [];
  for await (const o of storage.list('many/')) listed.push(o.key);
  assert.deepEqual(listed, keys);
  assert.equal(await storage.deletePrefix('many/'), 1105);
  const left: string[] = [];
  for await (const o of storage.list('')) left.push(o.key);
  assert.deepEqual(left, ['other/a.txt']);
});

test('a presigned URL fetches the object without credentials', async () => {
  await storage.upload('faces/f.png', Buffer.from([1, 2, 3]), 'image/png');
  const res = await fetch(await storage.presign('faces/f.png', 60));
  assert.equal(res.status, 200);
  assert.deepEqual([...new Uint8Array(await res.arrayBuffer())], [1, 2, 3]);
  assert.equal(await storage.getJson('faces/missing.json'), undefined);
});
