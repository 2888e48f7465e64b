// Packages loaded when a process first uses them, not when a module that uses them is imported: a
// command that only reads Redis (`status`) loads no AWS SDK, BullMQ, fal client or prom-client. The
// clients are built synchronously (`ctx.storage` is a property), which `import()` cannot do and
// `require` can. Each package loaded this way is CommonJS under Node (no "exports" map with an "import"
// condition), so `require` returns the very module a static `import` elsewhere gets: one copy per
// process (test/lazy-packages.test.ts checks it).
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** A loader of `name`'s exports, which loads the package on its first call: `lazyPackage<typeof Sdk>('sdk')`. */
export function lazyPackage<T>(name: string): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= require(name) as T);
}
