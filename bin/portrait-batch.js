#!/usr/bin/env node
// The `portrait-batch` command: runs the compiled JavaScript in dist/ (`npm run build`), with no
// TypeScript loader. That is all it does in the package and in the Docker image (no src/ there).
//
// In a source checkout (src/ beside dist/) a missing or outdated build is not run: an edit to src/
// takes effect at once, as before the build existed, by running src/ through tsx (a dev dependency),
// slower to start. `npm test` and `npm run demo` build first, so they run dist/.
import { existsSync, readdirSync, statSync } from 'node:fs';
import module from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

// Node >= 22.1 keeps the compiled code of the modules loaded from here on in a cache on disk (under
// the temp folder; NODE_COMPILE_CACHE names another), so the next start skips compiling them.
module.enableCompileCache?.();

// Only the AWS SDK's NodeVersionSupportWarning is silenced (see src/core/awsNodeWarning.ts: the
// lockfile pins SDK versions that support Node 20); every other warning still prints.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const DIST_CLI = new URL('../dist/cli.js', import.meta.url);
const SRC = new URL('../src/', import.meta.url);
const BUILD_STAMP = new URL('../dist/.build-stamp', import.meta.url);

/** In a source checkout: whether dist/ is missing or older than a file under src/. */
function buildIsBehindSources() {
  if (!existsSync(BUILD_STAMP) || !existsSync(DIST_CLI)) return true;
  const built = statSync(BUILD_STAMP).mtimeMs;
  return readdirSync(fileURLToPath(SRC), { recursive: true, withFileTypes: true }).some((e) => e.isFile() && statSync(join(e.parentPath ?? e.path, e.name)).mtimeMs > built);
}

if (existsSync(new URL('cli.ts', SRC)) && buildIsBehindSources()) {
  let register;
  try {
    ({ register } = await import('tsx/esm/api'));
  } catch {
    // No tsx (dependencies installed without the dev ones): the build is the only way to run.
  }
  if (register) {
    if (process.stderr.isTTY) process.stderr.write('note: dist/ is missing or older than src/, so src/ runs through tsx (slower); `npm run build` fixes it\n');
    register();
    await import(new URL('cli.ts', SRC).href);
  } else if (existsSync(DIST_CLI)) {
    process.stderr.write('note: dist/ is older than src/ and tsx is not installed: running the old build; `npm run build` brings it up to date\n');
    await import(DIST_CLI.href);
  } else {
    process.stderr.write('portrait-batch is not built: run `npm ci && npm run build` in its folder first\n');
    process.exitCode = 1;
  }
} else if (existsSync(DIST_CLI)) {
  await import(DIST_CLI.href);
} else {
  process.stderr.write('portrait-batch is not built (dist/cli.js is missing): run `npm run build` in its folder first\n');
  process.exitCode = 1;
}
