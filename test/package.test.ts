// The package as a user gets it: `npm run build` makes dist/ (JavaScript, .d.ts and the files the code
// reads at run time), `npm pack` ships dist/, bin/, examples/ and the README (no src/, test/, bench/),
// and the tarball installed into an empty folder (production dependencies only, no TypeScript loader)
// answers `npx portrait-batch --help` and `run --dry-run --json`, and imports from plain Node and from
// TypeScript by its name. Also: the CLI's start-up imports no package but commander (each command
// imports the rest inside its action; the timings are bench/cli-startup.ts's, never asserted here).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { dryRun } from '../src/producer/inspect.ts';
import { ROOT } from './helpers/cli.ts';

const run = promisify(execFile);
const STEP_MS = 300_000;

/** A command's output; on failure the error names the command and carries its stderr. */
async function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): Promise<{ stdout: string; stderr: string }> {
  try {
    return await run(cmd, args, { cwd, env, timeout: STEP_MS, maxBuffer: 16 << 20 });
  } catch (err) {
    const e = err as Error & { stderr?: string; stdout?: string };
    throw new Error(`${cmd} ${args.join(' ')} failed in ${cwd}: ${e.message}\n${e.stderr ?? ''}${e.stdout ?? ''}`);
  }
}

/** The environment of a user's shell: none of the test runner's stack variables. */
const userEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (/^(REDIS_|S3_|FAL_|WEBHOOK_|AWS_|NODE_TEST_CONTEXT$|NODE_OPTIONS$)/.test(k)) delete env[k];
  return env;
};

describe('the packed tarball', () => {
  let dir: string;
  let tarball: string;
  let packedFiles: string[];
  let app: string;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pb-package-'));
    // The build (skipped when dist/ is newer than every source), then the tarball (prepack builds too).
    await sh(process.execPath, ['scripts/build.mjs', '--if-stale'], ROOT);
    const { stdout } = await sh('npm', ['pack', '--pack-destination', dir, '--json', '--no-audit', '--no-fund'], ROOT);
    const [packed] = JSON.parse(stdout.slice(stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[];
    tarball = join(dir, packed!.filename);
    packedFiles = packed!.files.map((f) => f.path);
    app = join(dir, 'app');
    await sh('mkdir', ['-p', app], dir);
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'pb-package-test', private: true, type: 'module' }));
    // From the local npm cache where it can (the registry is asked only for what the cache lacks).
    await sh('npm', ['install', tarball, '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], app, userEnv());
  });

  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  test('the build puts beside each module the files it reads at run time, with .d.ts pointing at .js', () => {
    const src = join(ROOT, 'src');
    const runtimeFiles = readdirSync(src, { recursive: true, withFileTypes: true })
      .filter((e) => e.isFile() && !e.name.endsWith('.ts'))
      .map((e) => relative(src, join(e.parentPath, e.name)));
    assert.ok(runtimeFiles.some((f) => f.endsWith('.lua')) && runtimeFiles.some((f) => f.startsWith('ops/dashboard/assets/')), `run-time files found: ${runtimeFiles.join(', ')}`);
    for (const f of runtimeFiles) assert.ok(existsSync(join(ROOT, 'dist', f)), `dist/${f} is copied`);
    for (const f of ['index.js', 'index.d.ts', 'cli.js']) assert.ok(existsSync(join(ROOT, 'dist', f)), `dist/${f} is built`);
  });

  test('the tarball ships dist/, bin/, examples/ and the README, and no sources, tests or bench', () => {
    for (const f of ['package.json', 'README.md', 'bin/portrait-batch.js', 'dist/cli.js', 'dist/index.js', 'dist/index.d.ts', 'dist/core/commands/_lib.lua', 'dist/ops/dashboard/assets/app.js', 'examples/faces.csv']) {
      assert.ok(packedFiles.includes(f), `${f} is in the tarball`);
    }
    const stray = packedFiles.filter((f) => /^(src|test|bench|scripts|node_modules|demo-data|\.ci)\//.test(f) || f.endsWith('.ts') && !f.endsWith('.d.ts'));
    assert.deepEqual(stray, [], 'nothing but the built package');
  });

  test('installed into an empty folder: production dependencies only, no TypeScript loader', () => {
    const modules = join(app, 'node_modules');
    assert.ok(existsSync(join(modules, 'portrait-batch', 'dist', 'cli.js')));
    for (const dev of ['tsx', 'typescript', 's3rver', 'esbuild']) assert.equal(existsSync(join(modules, dev)), false, `${dev} is not installed with the package`);
    assert.equal(existsSync(join(modules, 'portrait-batch', 'src')), false, 'src/ is not shipped');
  });

  test('npx portrait-batch --help lists the commands; run --dry-run --json estimates the example manifest', async () => {
    const help = await sh('npx', ['--no', '--', 'portrait-batch', '--help'], app, userEnv());
    assert.match(help.stdout, /^Usage: portrait-batch /m);
    for (const cmd of ['run', 'status', 'runs', 'cancel', 'retry', 'report', 'download', 'resume', 'webhook', 'worker', 'scheduler', 'schedules', 'emulator', 'demo', 'chaos']) {
      assert.match(help.stdout, new RegExp(`^\\s+${cmd}\\b`, 'm'), `--help lists ${cmd}`);
    }
    const manifest = join(app, 'node_modules', 'portrait-batch', 'examples', 'faces.csv');
    const out = await sh('npx', ['--no', '--', 'portrait-batch', 'run', '--dry-run', '--json', manifest], app, userEnv());
    const est = JSON.parse(out.stdout) as Record<string, unknown>;
    // The same estimate as the sources give for the same file, and every data line counted.
    assert.deepEqual(est, JSON.parse(JSON.stringify(await dryRun(manifest))));
    const dataLines = (await readFile(manifest, 'utf8')).split('\n').filter((l) => l.trim()).length - 1;
    assert.equal(est.rows, dataLines);
  });

  test("plain Node imports the library by the package's name, and TypeScript finds its types", async () => {
    const probe = "import { createPortraitBatch, dryRun, loadConfig } from 'portrait-batch'; console.log([typeof createPortraitBatch, typeof dryRun, typeof loadConfig].join(' '));";
    const { stdout } = await sh(process.execPath, ['--input-type=module', '-e', probe], app, userEnv());
    assert.equal(stdout.trim(), 'function function function');
    // A consumer's type check against the package's exports (their "types" condition) and nothing else.
    await writeFile(
      join(app, 'consumer.mts'),
      [
        "import { createPortraitBatch, dryRun, type DryRun, type PortraitBatch, type RunStatus } from 'portrait-batch';",
        "const pb: PortraitBatch = createPortraitBatch({ REDIS_URL: 'redis://127.0.0.1:1' });",
        "const estimate: DryRun = await dryRun('faces.csv');",
        'const rows: number = estimate.rows;',
        'const status: RunStatus | undefined = await pb.status(String(rows));',
        'export { status };',
      ].join('\n'),
    );
    const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
    const typeRoots = join(ROOT, 'node_modules', '@types');
    const args = ['--noEmit', '--strict', '--skipLibCheck', '--module', 'nodenext', '--moduleResolution', 'nodenext', '--target', 'es2022', '--types', 'node', '--typeRoots', typeRoots];
    // The check can fail: a wrong type is refused. Both files in one compile (one tsc start, not two):
    // its only error is the wrong file's, so the consumer's file checks clean.
    await writeFile(join(app, 'wrong.mts'), "import { dryRun } from 'portrait-batch';\nconst rows: string = (await dryRun('faces.csv')).rows;\nexport { rows };\n");
    const checked = await run(process.execPath, [tsc, ...args, 'consumer.mts', 'wrong.mts'], { cwd: app, timeout: STEP_MS }).then(
      (r) => r.stdout,
      (err: Error & { stdout?: string }) => err.stdout ?? String(err),
    );
    const errors = checked.split('\n').filter((l) => /error TS\d+/.test(l));
    assert.deepEqual(
      errors.map((l) => `${l.slice(0, l.indexOf('('))} ${/TS\d+/.exec(l)![0]}`),
      ['wrong.mts TS2322'],
      checked,
    );
  });
});

/** Every package a module loads when it is imported (its static imports, followed through src/). */
function packagesLoadedBy(entry: string): Map<string, string> {
  const seen = new Set<string>();
  const packages = new Map<string, string>();
  const visit = (file: string, text: string) => {
    // `import type` / `export type` are erased; every other import or re-export loads its module.
    for (const m of text.matchAll(/^\s*(import|export)(\s+type\b)?\s*(?:[\w\s{},*$]*?\s*from\s*)?['"]([^'"]+)['"]/gm)) {
      if (m[2]) continue;
      const spec = m[3]!;
      if (spec.startsWith('.')) walk(resolve(dirname(file), spec));
      else if (!spec.startsWith('node:')) packages.set(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!, relative(ROOT, file));
    }
  };
  const walk = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    visit(file, readFileSync(file, 'utf8'));
  };
  walk(entry);
  return packages;
}

test('the CLI starts with commander only: every other module is imported by the command that uses it', async () => {
  const loaded = packagesLoadedBy(join(ROOT, 'src', 'cli.ts'));
  assert.deepEqual([...loaded.keys()], ['commander'], `packages loaded before a command runs: ${[...loaded].map(([p, f]) => `${p} (by ${f})`).join(', ')}`);
  // And the commands load what they need: the emulator, demo, chaos and scheduler only in theirs.
  const cli = await readFile(join(ROOT, 'src', 'cli.ts'), 'utf8');
  for (const mod of ['./emulator/index.ts', './demo.ts', './chaos.ts', './roles.ts', './index.ts']) assert.ok(cli.includes(`import('${mod}')`), `${mod} is imported by a command`);
});
