// `npm run build`: compiles src/ to dist/ (JavaScript and .d.ts) with tsc and copies beside the
// modules the files they read at run time (the Lua scripts, the dashboard's assets: every file under src/
// that is not TypeScript), so `new URL('./commands/x.lua', import.meta.url)` resolves the same in dist/.
// Plain JavaScript, so building needs only `typescript`, never a TypeScript loader.
//
//   node scripts/build.mjs             build from scratch (dist/ is removed first: no stale modules)
//   node scripts/build.mjs --if-stale  build only when a source is newer than the last build
//
// dist/.build-stamp marks a finished build; bin/portrait-batch.js compares it with src/ in a source
// checkout (see there).
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const src = join(root, 'src');
const dist = join(root, 'dist');
const stamp = join(dist, '.build-stamp');

/** Every file under a folder, as paths relative to it. */
const filesUnder = (dir) => readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => relative(dir, join(e.parentPath ?? e.path, e.name)));

/** What a build is made from: the sources and the compiler settings. */
const inputs = () => [...filesUnder(src).map((f) => join(src, f)), join(root, 'tsconfig.json'), join(root, 'tsconfig.build.json'), join(root, 'package-lock.json')];

function isStale() {
  if (!existsSync(stamp)) return true;
  const built = statSync(stamp).mtimeMs;
  return inputs().some((f) => existsSync(f) && statSync(f).mtimeMs > built);
}

if (process.argv.includes('--if-stale') && !isStale()) process.exit(0);

const started = Date.now();
rmSync(dist, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' });

let assets = 0;
for (const f of filesUnder(src)) {
  if (f.endsWith('.ts')) continue;
  mkdirSync(dirname(join(dist, f)), { recursive: true });
  copyFileSync(join(src, f), join(dist, f));
  assets++;
}

// tsc keeps the sources' `.ts` specifiers in the .d.ts files (TypeScript reads them, other tools and
// editors often do not): point them at the emitted `.js` like the JavaScript does.
const relativeTs = /((?:from|import)\s*\(?\s*['"])(\.{1,2}\/[^'"]+)\.ts(['"])/g;
for (const f of filesUnder(dist)) {
  if (!f.endsWith('.d.ts')) continue;
  const text = readFileSync(join(dist, f), 'utf8');
  const rewritten = text.replace(relativeTs, '$1$2.js$3');
  if (rewritten !== text) writeFileSync(join(dist, f), rewritten);
}

writeFileSync(stamp, `${new Date().toISOString()}\n`);
process.stderr.write(`build: dist/ from src/ in ${((Date.now() - started) / 1000).toFixed(1)} s (${assets} run-time files copied)\n`);
