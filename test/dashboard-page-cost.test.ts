// A run's dashboard page costs a page, not the manifest: a finished run of 12,000 rows (a 2 MB report)
// is viewed through a proxy that counts every byte S3 answers, and any page of it — the first, one
// deep inside, a status filter — reads a few KB (the report index's entries and the page's lines),
// whatever the run's size. The latency at 10^6 rows is in bench/ (dashboard-page), not asserted here.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { runLayout } from '../src/core/layout.ts';
import { createPortraitBatch, type PortraitBatch, type RunningAdmin } from '../src/index.ts';
import { startCountingProxy, type CountingProxy } from './helpers/countingProxy.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack, TEST_POLICY, type TestStack } from './helpers/stack.ts';

const REJECTED = 12_000;
const COMPLETED = 3;
/** What one page view may read from S3: the page's lines and their index entries, with room to spare. */
const PAGE_BUDGET_BYTES = 64 * 1024;

let t: TestStack;
let proxy: CountingProxy;
let viewer: PortraitBatch;
let admin: RunningAdmin;
let runId: string;
let reportBytes = 0;

before(async () => {
  t = await startTestStack();
  const lines = ['id,face_url'];
  for (let i = 0; i < COMPLETED; i++) lines.push(`done-${i},"${await faceDataUri(i)}"`);
  // Rejected rows cost no fal call: a large finished run in seconds.
  for (let i = 0; i < REJECTED; i++) lines.push(`bad-${i},javascript:x`);
  ({ runId } = await t.pb.startRun(await t.manifest('large.csv', `${lines.join('\n')}\n`)));
  const run = await t.pb.waitForRun(runId, { timeoutMs: 120_000 });
  assert.deepEqual([run.completed, run.rejected], [COMPLETED, REJECTED]);
  for await (const o of t.ctx.storage.list(runLayout('', runId).report)) reportBytes = o.size;

  // The dashboard of another process, reading S3 through the counting proxy.
  proxy = await startCountingProxy(t.local.env.S3_ENDPOINT!);
  viewer = createPortraitBatch({ ...t.local.env, S3_ENDPOINT: proxy.url, LOG_LEVEL: 'silent' }, { policy: TEST_POLICY });
  admin = await viewer.startAdmin({ port: 0, dashboardToken: t.local.env.DASHBOARD_TOKEN });
});

after(async () => {
  await admin?.close();
  await viewer?.close();
  await proxy?.close();
  await t.stop();
});

async function view(query: string): Promise<{ html: string; bytes: number; requests: string[] }> {
  proxy.reset();
  const res = await fetch(`${admin.url}/ui/runs/${runId}${query}`, { headers: { authorization: `Bearer ${t.local.env.DASHBOARD_TOKEN}` } });
  const html = await res.text();
  assert.equal(res.status, 200, html.slice(0, 500));
  return { html, bytes: proxy.bytes(), requests: proxy.requests() };
}

/** Line numbers of the gallery's cards, in order. */
const cardLines = (html: string) => [...html.matchAll(/<figcaption>.*?line (\d+) ·/g)].map((m) => Number(m[1]));

test('any page of a finished 12,000-row run reads a page of bytes from S3, not the report', async (ctx) => {
  assert.ok(reportBytes > 1.5 * 1024 * 1024, `the report is large (${reportBytes} bytes)`);

  const first = await view('');
  assert.deepEqual(cardLines(first.html), Array.from({ length: 24 }, (_, i) => i + 2), 'the first 24 rows, from line 2');
  assert.match(first.html, /page 1 of 501 · 12003 rows/);
  assert.match(first.html, /rejected <small>12000<\/small>/, 'counts by status for the whole run');
  assert.match(first.html, /<span class="count">12000<\/span> <span class="badge rejected">rejected<\/span>/, 'failures grouped over the whole run');

  const deep = await view('?page=500');
  assert.deepEqual(cardLines(deep.html), Array.from({ length: 24 }, (_, i) => 499 * 24 + i + 2), 'page 500: rows 11977 to 12000');
  const rejected = await view('?status=rejected&page=400');
  assert.deepEqual(cardLines(rejected.html), Array.from({ length: 24 }, (_, i) => COMPLETED + 399 * 24 + i + 2));
  assert.match(rejected.html, /page 400 of 500 · 12000 rows/);
  const completed = await view('?status=completed');
  assert.deepEqual(cardLines(completed.html), [2, 3, 4]);
  const beyond = await view('?page=900');
  assert.deepEqual(cardLines(beyond.html), []);

  for (const [name, v] of Object.entries({ first, deep, rejected, completed, beyond })) {
    ctx.diagnostic(`${name}: ${v.bytes} bytes from S3 in ${v.requests.length} requests`);
    assert.ok(v.bytes < PAGE_BUDGET_BYTES, `${name}: ${v.bytes} bytes read from S3 (report: ${reportBytes}): ${v.requests.join(', ')}`);
    assert.ok(v.requests.every((r) => !r.includes('/report.csv') || / bytes=\d+-\d+$/.test(r)), `${name}: the report is only read by range: ${v.requests.join(', ')}`);
  }
});

test('a finished run without an index (finished before it existed) gets one on its first view; views after that cost a page', async () => {
  const removed = await t.ctx.storage.deletePrefix(runLayout('', runId).reportIndex);
  assert.ok(removed >= 2, 'the index was written when the run finished');
  const building = await view('?page=3');
  assert.deepEqual(cardLines(building.html), Array.from({ length: 24 }, (_, i) => 2 * 24 + i + 2));
  assert.ok(building.bytes >= reportBytes, 'the first view reads the report once to index it');
  const after = await view('?page=450');
  assert.ok(after.bytes < PAGE_BUDGET_BYTES, `${after.bytes} bytes`);
  assert.deepEqual(cardLines(after.html), Array.from({ length: 24 }, (_, i) => 449 * 24 + i + 2));
});
