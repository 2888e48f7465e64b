// A private redis-server for the embedded default (demo, chaos, tests): on a loopback port, its data
// under a directory of ours, with AOF so a rerun resumes where the last one stopped, fsynced before each
// reply (`appendfsync always`: a claim Redis acknowledged survives a crash of the host; see the README's
// "Never lose, never pay twice"). Its pid is kept
// in the directory, so a redis-server left behind by a killed process is stopped before a new one
// starts on the same data (never two on one AOF).
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { commandLine, isAlive } from './dataDirLock.ts';
import { freePort } from './ports.ts';

export interface RunningRedis {
  url: string;
  port: number;
  process: ChildProcess;
  stop(): Promise<void>;
}

export const REDIS_PID_FILE = 'redis.pid';

/** Whatever way this process exits, its Redis servers go with it (SIGKILL aside: see stopLeftoverRedis). */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGTERM');
});

/** Stops a redis-server still running on this directory (its owner died without stopping it). */
export async function stopLeftoverRedis(dir: string): Promise<void> {
  const pid = Number((await readFile(join(dir, REDIS_PID_FILE), 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid) || !/redis-server/.test(commandLine(pid) ?? '')) return;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 200 && isAlive(pid); i++) await sleep(50);
  if (isAlive(pid)) process.kill(pid, 'SIGKILL');
}

/** The AOF's directory under a Redis data dir (Redis 7's multi-part AOF: base, increments, manifest). */
export const AOF_DIR = 'appendonlydir';

export async function startRedisServer(opts: {
  dir: string;
  persistent?: boolean;
  port?: number;
  /** AOF fsync policy of a persistent server; default `always` (see the file header). */
  appendfsync?: 'always' | 'everysec' | 'no';
}): Promise<RunningRedis> {
  await mkdir(opts.dir, { recursive: true });
  await stopLeftoverRedis(opts.dir);
  const port = opts.port ?? (await freePort());
  const args = ['--port', String(port), '--bind', '127.0.0.1', '--dir', opts.dir, '--save', '', '--daemonize', 'no', '--protected-mode', 'yes'];
  args.push('--pidfile', join(opts.dir, REDIS_PID_FILE));
  args.push(...(opts.persistent === false ? ['--appendonly', 'no'] : ['--appendonly', 'yes', '--appendfsync', opts.appendfsync ?? 'always']));
  // Its own process group: a terminal's Ctrl-C reaches only us, and we stop Redis after the workers
  // that use it, not at the same moment.
  const child = spawn('redis-server', args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  running.add(child);
  child.once('exit', () => running.delete(child));
  await new Promise<void>((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => reject(new Error(`redis-server did not start within 15 s:\n${out}`)), 15_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(
        (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? new Error('redis-server is not installed: run `npm run setup` (installs it with apt-get) or set REDIS_URL')
          : err,
      );
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(
        /Address already in use/i.test(out)
          ? new Error(`port ${port} on 127.0.0.1 (the embedded Redis) is already in use by another program.`)
          : new Error(`redis-server exited with code ${code}: ${out.trim().split('\n').pop() ?? ''}`),
      );
    });
  });
  child.stdout!.resume();
  child.stderr!.resume();
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    process: child,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
