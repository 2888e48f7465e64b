// `demo` on the embedded default: finishes, leaves a contact sheet, and a second run resumes the same
// run without submitting anything.
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { runDemo } from '../src/demo.ts';

test('demo runs examples/faces.csv, leaves a contact sheet, and resumes on rerun', { timeout: 120_000 }, async () => {
  const dataDir = await mkdtemp(join(tmpdir(), 'pb-demo-'));
  const env = { ...process.env };
  for (const k of ['REDIS_URL', 'S3_ENDPOINT', 'FAL_QUEUE_URL', 'WEBHOOK_PORT', 'WEBHOOK_PUBLIC_URL']) delete process.env[k];
  try {
    const first = await runDemo({ dataDir });
    assert.equal(first.state, 'finished');
    assert.deepEqual([first.total, first.completed, first.failed, first.rejected], [13, 12, 0, 1]);
    const html = await readFile(join(first.outputDir, 'index.html'), 'utf8');
    assert.equal((html.match(/class="portrait"/g) ?? []).length, 15, 'every portrait is on the sheet');
    assert.match(html, /image_size: &#34;giant&#34;/);
    assert.deepEqual((await readdir(join(first.outputDir, 'images'))).length, 12);
    const report = await readFile(join(first.outputDir, 'report.csv'), 'utf8');

    const second = await runDemo({ dataDir });
    assert.equal(second.runId, first.runId);
    assert.equal(await readFile(join(second.outputDir, 'report.csv'), 'utf8'), report, 'same request ids, nothing new');
    const summary = JSON.parse(await readFile(join(second.outputDir, 'summary.json'), 'utf8')) as { submits: number };
    assert.equal(summary.submits, 12);
  } finally {
    Object.assign(process.env, env);
    await rm(dataDir, { recursive: true, force: true });
  }
});
