// Preloaded into a child process (`node --import ./test/helpers/loadedPackages.mjs …`): when it exits,
// writes the npm packages it loaded through CommonJS (every package test/lazy-packages.test.ts asks
// about is CommonJS under Node) to the file LOADED_PACKAGES_FILE names, one a line.
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const cache = createRequire(import.meta.url).cache;
process.on('exit', () => {
  const names = new Set();
  for (const file of Object.keys(cache)) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(file);
    if (m) names.add(m[1]);
  }
  if (process.env.LOADED_PACKAGES_FILE) writeFileSync(process.env.LOADED_PACKAGES_FILE, [...names].sort().join('\n'));
});
