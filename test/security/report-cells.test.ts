// Report cells: manifest text written into report.csv never starts a spreadsheet formula, whether the
// spreadsheet splits on `,`, `;` or tab; the escaping is undone exactly when the report is read back.
// report.csv names each row's key (row_key), which the contact sheet uses instead of re-deriving it.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse } from 'csv-parse/sync';
import { runLayout } from '../../src/core/layout.ts';
import { copyRunToDir, writeContactSheet } from '../../src/outputs/contactSheet.ts';
import { escapeCell, toRowKey, unescapeCell } from '../../src/manifest/index.ts';
import { produceRun } from '../../src/producer/produce.ts';
import { waitForRun } from '../../src/producer/wait.ts';
import { writeFaces } from '../helpers/faces.ts';
import { startTestStack, type TestStack } from '../helpers/stack.ts';

const TRIGGER = /^[=+\-@\t\r]/;

/** Every cell some spreadsheet would see in this CSV text, splitting on , ; tab and line breaks. */
function cellsInAnyLocale(text: string): string[] {
  return text.split(/[,;\t\r\n]/).map((c) => (c.startsWith('"') ? c.slice(1) : c));
}

describe('escapeCell', () => {
  test('a trigger at the start or after , ; tab CR LF gets a quote; other text is untouched', () => {
    assert.equal(escapeCell('plain text'), 'plain text');
    assert.equal(escapeCell('a-b+c=d@e'), 'a-b+c=d@e');
    assert.equal(escapeCell('=1+2'), "'=1+2");
    assert.equal(escapeCell('x;=1+2'), "x;'=1+2");
    assert.equal(escapeCell('x,+1;-2\t@3'), "x,'+1;'-2\t'@3");
    assert.equal(escapeCell('\t=x'), "'\t'=x");
    assert.equal(escapeCell('a\n=b\r-c'), "a\n'=b\r'-c");
    assert.equal(escapeCell("'quoted"), "''quoted", 'a quote already there is escaped too');
    for (const v of ['x;=1+2', '=cmd|"/c calc"!A0', "a,'=b", "''", "'", '\t\t=', ';;', '', '田中;@x', 'a;\r\n+b']) {
      assert.equal(unescapeCell(escapeCell(v)), v, JSON.stringify(v));
      for (const cell of cellsInAnyLocale(escapeCell(v))) assert.doesNotMatch(cell, TRIGGER, JSON.stringify(v));
    }
  });
});

describe('report.csv', () => {
  let t: TestStack;
  before(async () => {
    t = await startTestStack();
  });
  after(() => t.stop());

  test('ids that are formulas in some locale are escaped in report.csv, row_key names each row, the contact sheet reads it', async () => {
    await writeFaces(join(t.dir, 'faces'), 2);
    const ids = ['x;=1+2', '=HYPERLINK("http://evil.example")', '-5', 'a,@b', '田中', 'plain'];
    const csv = `id,face_url\n${ids.map((id, i) => `"${id.replace(/"/g, '""')}",faces/face-${i % 2}.png`).join('\n')}\n`;
    const { runId } = await produceRun(t.ctx, await t.manifest('cells.csv', csv));
    const run = await waitForRun(t.ctx, runId, { timeoutMs: 60_000 });
    assert.equal(run.completed, ids.length);

    const layout = runLayout(t.ctx.cfg.S3_PREFIX, runId);
    const out = join(t.dir, 'out');
    await copyRunToDir(t.ctx.storage, layout.base, out);
    const text = await readFile(join(out, 'report.csv'), 'utf8');
    for (const cell of cellsInAnyLocale(text)) assert.doesNotMatch(cell, TRIGGER, `a cell starts a formula: ${JSON.stringify(cell)}`);

    const report = parse(text, { columns: true }) as Record<string, string>[];
    assert.deepEqual(Object.keys(report[0]!), ['line', 'id', 'row_key', 'face_url', 'status', 'request_id', 'attempts', 'images', 'seed', 'error', 'error_type', 'error_category', 'face_width', 'face_height', 'face_sha256']);
    assert.deepEqual(report.map((r) => unescapeCell(r.id!)), ids);
    assert.deepEqual(report.map((r) => unescapeCell(r.row_key!)), ids.map(toRowKey));
    assert.equal(report[0]!.id, "x;'=1+2");

    const html = await readFile(await writeContactSheet(out, layout.base, 'cells'), 'utf8');
    // Every row's face is found by its row_key, the non-ASCII id's too.
    for (const id of ids) assert.ok(html.includes(`src="inputs/${toRowKey(id)}.png"`), `face of ${id}`);
    assert.ok(html.includes('x;=1+2'), 'the id is shown as written');
  });
});
