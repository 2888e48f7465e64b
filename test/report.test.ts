// report.csv is opened in spreadsheets: a cell that starts like a formula (= + - @) is written with a
// leading ' so the spreadsheet shows it instead of running it — ids and face URLs come from whoever
// wrote the manifest.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parse } from 'csv-parse/sync';
import { runLayout } from '../src/core/layout.ts';
import { produceRun } from '../src/producer/produce.ts';
import { waitForRun } from '../src/producer/wait.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack } from './helpers/stack.ts';

test('report cells that a spreadsheet would run as formulas are escaped', async () => {
  const t = await startTestStack();
  try {
    const face = await faceDataUri(5);
    const ids = ['=1+2', '+SUM(A1)', '-3', '@cmd', 'plain'];
    const csv = ['id,face_url', ...ids.map((id) => `"${id}","${face}"`), 'evil,"=HYPERLINK(""http://x"")"'].join('\n');
    const { runId } = await produceRun(t.ctx, await t.manifest('formulas.csv', `${csv}\n`));
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
    assert.deepEqual([run.completed, run.rejected], [5, 1]);
    const chunks: Buffer[] = [];
    for await (const c of await t.ctx.storage.getStream(runLayout(t.ctx.cfg.S3_PREFIX, runId).report)) chunks.push(c as Buffer);
    const report = parse(Buffer.concat(chunks), { columns: true }) as Record<string, string>[];
    assert.deepEqual(
      report.map((r) => r.id),
      ["'=1+2", "'+SUM(A1)", "'-3", "'@cmd", 'plain', 'evil'],
    );
    const evil = report.find((r) => r.id === 'evil')!;
    assert.equal(evil.status, 'rejected');
    assert.equal(evil.face_url, `'=HYPERLINK("http://x")`);
    for (const r of report) for (const [col, v] of Object.entries(r)) assert.doesNotMatch(v, /^[=+\-@]/, `${col} of line ${r.line}`);
  } finally {
    await t.stop();
  }
});
