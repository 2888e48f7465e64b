// One report cell: text from a manifest that a spreadsheet would run as a formula is escaped with a
// leading ', and reading the report back (the contact sheet) removes exactly that prefix.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { escapeCell, unescapeCell } from '../src/manifest/index.ts';

test('a cell starting with = + - @, a tab or a CR gets a leading quote; reading it back removes exactly that', () => {
  for (const v of ['=1+2', '+1', '-1', '@A1', '\t=x', '\r=x']) {
    assert.equal(escapeCell(v), `'${v}`);
    assert.equal(unescapeCell(escapeCell(v)), v);
  }
  for (const v of ['plain', '', ' =not at the start', "'quoted", 'a=b', '1-2']) {
    assert.equal(escapeCell(v), v);
    assert.equal(unescapeCell(v), v);
  }
  assert.equal(unescapeCell("'=x"), '=x');
  assert.equal(unescapeCell("'plain"), "'plain", 'a leading quote the escaping did not add stays');
  assert.equal(unescapeCell("''=x"), "''=x");
});
