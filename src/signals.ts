// Graceful shutdown in one place: the first SIGINT/SIGTERM asks the running command to stop cleanly
// (workers finish what they hold, the embedded Redis is stopped after them); a second one exits at
// once (the embedded Redis still goes with the process: see src/local/redisServer.ts), with one rule
// for every command: exit 128 + the signal's number, as a shell reports a process a signal ended.

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

/** The second signal: nothing more is waited for (130 after SIGINT, 143 after SIGTERM). */
function exitAtOnce(signal: NodeJS.Signals, log: (line: string) => void): never {
  log(`${signal} again: exiting at once`);
  process.exit(signal128(signal));
}

const stderrLine = (line: string) => process.stderr.write(`${line}\n`);

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
    if (got) exitAtOnce(signal, stderrLine);
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

// Long-running processes (webhook, worker, scheduler, demo --keep-alive): the first SIGTERM or SIGINT
// stops them taking work and closes them in order — workers finish what they hold (a producer hands
// its run back), receivers stop listening, Redis is closed. If that cannot finish within the grace
// period (Redis or S3 unreachable), the process still exits 0 in time: a job it still held is taken
// up by another worker once its lock lapses, so nothing is lost. A second signal exits at once (exitAtOnce).

/** Within the 10 s an orchestrator usually allows between SIGTERM and SIGKILL. */
export const SHUTDOWN_GRACE_MS = 8000;

const SIGNALS = ['SIGINT', 'SIGTERM'] as const;

/** Resolves with the first SIGINT/SIGTERM. */
export function nextSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (s: NodeJS.Signals) => {
      for (const sig of SIGNALS) process.off(sig, on);
      resolve(s);
    };
    for (const sig of SIGNALS) process.on(sig, on);
  });
}

export interface ShutdownOptions {
  graceMs?: number;
  log?: (line: string) => void;
  /** Called as soon as the signal comes, before stopping (e.g. health checks start answering 503). */
  onSignal?: (signal: NodeJS.Signals) => void;
}

/** Stops with `stop` on a signal; resolves when stopped or when the grace period is over. */
export async function stopOnSignal(stop: () => Promise<void>, opts: ShutdownOptions = {}): Promise<void> {
  const signal = await nextSignal();
  await stopWithin(stop, signal, opts);
}

export async function stopWithin(stop: () => Promise<void>, signal: NodeJS.Signals, opts: ShutdownOptions = {}): Promise<void> {
  const log = opts.log ?? stderrLine;
  const graceMs = opts.graceMs ?? SHUTDOWN_GRACE_MS;
  const again = (s: NodeJS.Signals) => exitAtOnce(s, log);
  for (const sig of SIGNALS) process.once(sig, again);
  log(`${signal}: stopping — no new work; finishing or handing back what is in hand (at most ${graceMs / 1000} s)…`);
  opts.onSignal?.(signal);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), graceMs);
    timer.unref();
  });
  try {
    const outcome = await Promise.race([
      stop().then(
        () => 'stopped' as const,
        (err: unknown) => {
          log(`while stopping: ${err instanceof Error ? err.message : String(err)}`);
          return 'stopped' as const;
        },
      ),
      late,
    ]);
    if (outcome === 'late') log(`not stopped within ${graceMs / 1000} s (is Redis or S3 unreachable?): exiting; jobs still held are retried by other workers once their locks lapse`);
    else log('stopped');
  } finally {
    clearTimeout(timer);
    for (const sig of SIGNALS) process.off(sig, again);
  }
}
