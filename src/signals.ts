// Graceful shutdown in one place: the first SIGINT/SIGTERM asks the running command to stop cleanly
// (workers finish what they hold, the embedded Redis is stopped after them); a second one exits at
// once (the embedded Redis still goes with the process: see src/local/redisServer.ts).

/** A command stopped by a signal: one sentence and exit 130 (SIGINT) or 143 (SIGTERM). */
export class InterruptedError extends Error {
  override name = 'InterruptedError';
  constructor(readonly signal: NodeJS.Signals) {
    super(`interrupted by ${signal}; stopped cleanly, run the same command again to resume.`);
  }

  get exitCode(): number {
    return signal128(this.signal);
  }
}

const signal128 = (s: NodeJS.Signals) => 128 + (s === 'SIGINT' ? 2 : s === 'SIGTERM' ? 15 : 1);

export interface Interruption {
  /** Rejects with InterruptedError as soon as a signal came, else settles like `p`. */
  race<T>(p: Promise<T>): Promise<T>;
  /** Throws InterruptedError when a signal came already. */
  check(): void;
  dispose(): void;
}

/** Watches SIGINT and SIGTERM until disposed. */
export function watchInterruption(onFirst?: (signal: NodeJS.Signals) => void): Interruption {
  let got: NodeJS.Signals | undefined;
  let wake: ((s: NodeJS.Signals) => void) | undefined;
  const signalled = new Promise<NodeJS.Signals>((resolve) => (wake = resolve));
  const handler = (signal: NodeJS.Signals) => {
    if (got) {
      process.stderr.write(`${signal} again: exiting at once\n`);
      process.exit(signal128(signal));
    }
    got = signal;
    process.stderr.write(`${signal}: stopping cleanly (again to exit at once)…\n`);
    onFirst?.(signal);
    wake!(signal);
  };
  process.on('SIGINT', handler);
  process.on('SIGTERM', handler);
  return {
    race: <T>(p: Promise<T>) =>
      Promise.race([p, signalled.then((s) => Promise.reject(new InterruptedError(s)))]),
    check() {
      if (got) throw new InterruptedError(got);
    },
    dispose() {
      process.off('SIGINT', handler);
      process.off('SIGTERM', handler);
    },
  };
}
