// Every arrow points down: a room of src/ (a top-level folder or file) imports only rooms on its own
// floor or below, as README's "How it flows" table places them. Imports are read with TypeScript's own
// pre-processor, so type-only imports, re-exports and import() count as much as plain ones.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import ts from 'typescript';
import { ROOT } from './helpers/cli.ts';

const SRC = join(ROOT, 'src');

/** Arrows that still run back up, each to be turned down (issue #19); the test fails once one is fixed, so the list only shrinks. */
const KNOWN_UPWARD: string[] = [];

/** Room → floor, from the table under README's "How it flows". */
function floorsFromReadme(): Map<string, number> {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const section = readme.split(/^## How it flows$/m)[1]?.split(/^## /m)[0];
  assert.ok(section, 'README has a "How it flows" section');
  const floors = new Map<string, number>();
  for (const line of section.split('\n')) {
    const m = /^\|\s*(\d+)\s*\|([^|]+)\|/.exec(line);
    if (!m) continue;
    for (const room of m[2]!.matchAll(/`([^`]+)`/g)) floors.set(room[1]!.replace(/\/$/, ''), Number(m[1]));
  }
  assert.ok(floors.size > 0, 'the "How it flows" section has a floors table');
  return floors;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sourceFiles(p);
    return /\.(ts|mts)$/.test(e.name) && !e.name.endsWith('.d.ts') ? [p] : [];
  });
}

const roomOf = (srcPath: string) => srcPath.split('/')[0]!;

/** Every `from → to` of src/ (paths relative to src/) that a file imports by a relative path. */
function arrows(): { from: string; to: string }[] {
  return sourceFiles(SRC).flatMap((file) => {
    const { importedFiles } = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    return importedFiles
      .filter((i) => i.fileName.startsWith('.'))
      .map((i) => ({ from: relative(SRC, file), to: relative(SRC, resolve(dirname(file), i.fileName)) }))
      .filter((a) => !a.to.startsWith('..'));
  });
}

test('the README places every room of src/ on a floor', () => {
  const floors = floorsFromReadme();
  const rooms = readdirSync(SRC).filter((n) => n !== '.DS_Store');
  assert.deepEqual(rooms.filter((r) => !floors.has(r)), [], 'rooms of src/ missing from the floors table in README "How it flows"');
  assert.deepEqual([...floors.keys()].filter((r) => !rooms.includes(r)), [], 'rooms in the floors table that src/ does not have');
});

test('every import points to the same floor or one below', () => {
  const floors = floorsFromReadme();
  const upward = arrows()
    .filter((a) => (floors.get(roomOf(a.from)) ?? 0) < (floors.get(roomOf(a.to)) ?? 0))
    .map((a) => `${a.from} -> ${a.to}`);
  const found = [...new Set(upward)].sort();
  assert.deepEqual(
    found.filter((a) => !KNOWN_UPWARD.includes(a)),
    [],
    'imports that run up a floor (README "How it flows"): move the shared piece down, or inject it',
  );
  assert.deepEqual(
    KNOWN_UPWARD.filter((a) => !found.includes(a)),
    [],
    'known upward imports that are gone: take them off KNOWN_UPWARD',
  );
});
