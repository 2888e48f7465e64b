// Runs the real CLI (`node bin/portrait-batch.js …`) as a child process, with the embedded-stack
// variables of the test runner's environment removed unless given.
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../../bin/portrait-batch.js', import.meta.url));
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

const STACK_VARS = ['REDIS_URL', 'S3_ENDPOINT', 'S3_BUCKET', 'FAL_QUEUE_URL', 'FAL_JWKS_URL', 'FAL_KEY', 'RESULT_HOSTS', 'WEBHOOK_PORT', 'WEBHOOK_PUBLIC_URL', 'WEBHOOK_SECRET', 'LOG_LEVEL', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'NODE_TEST_CONTEXT', 'AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED'];

export interface CliRun {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** Resolves with the first stderr line matching `re` (rejects if the process exits first). */
  waitForLine(re: RegExp): Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

export function runCli(args: string[], env: Record<string, string> = {}, opts: { cwd?: string; nodeArgs?: string[] } = {}): CliRun {
  const base = { ...process.env };
  for (const k of STACK_VARS) delete base[k];
  const child = spawn(process.execPath, [...(opts.nodeArgs ?? []), CLI, ...args], { env: { ...base, ...env }, cwd: opts.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters: { re: RegExp; resolve: (l: string) => void }[] = [];
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => {
    err += d.toString();
    for (const w of [...waiters]) {
      const line = err.split('\n').find((l) => w.re.test(l));
      if (line !== undefined) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal, stdout: out, stderr: err })),
  );
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    waitForLine(re) {
      const line = err.split('\n').find((l) => re.test(l));
      if (line !== undefined) return Promise.resolve(line);
      return new Promise((resolve, reject) => {
        waiters.push({ re, resolve });
        void exited.then((r) => reject(new Error(`exited (${r.code ?? r.signal}) before a line matching ${re}:\n${r.stderr}`)));
      });
    },
    exited,
  };
}

/** Asserts-friendly: stderr lines that are not empty. */
export const lines = (text: string) => text.split('\n').filter((l) => l.trim() !== '');

/** Whether stderr holds something that looks like a stack trace. */
export const hasStack = (text: string) => /^\s+at .+\(.+:\d+:\d+\)|^\s+at .+:\d+:\d+$/m.test(text);
