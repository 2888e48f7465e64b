// One embedded stack per data dir: a pid file in the dir. A second process on the same dir is refused
// with one sentence while the first lives, and takes over when the first is gone (killed, crashed).
import { readFileSync, rmSync } from 'node:fs';
import { open, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { UnreachableError } from '../core/reachability.ts';

export const LOCK_FILE = 'stack.pid';

/** Whether a process with this pid exists (EPERM: it exists but is someone else's). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The command line of a live process (Linux /proc), or undefined where that cannot be read. */
export function commandLine(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
  } catch {
    return undefined;
  }
}

/** A live process that is (still) a node process: a recycled pid of another program does not count. */
function isLiveNode(pid: number): boolean {
  if (!isAlive(pid)) return false;
  const cmd = commandLine(pid);
  return cmd === undefined || /node|portrait-batch/.test(cmd);
}

export interface DataDirLock {
  /** True when a dead holder's lock was taken over (its leftovers may still be running). */
  tookOver: boolean;
  release(): Promise<void>;
}

export async function lockDataDir(dataDir: string): Promise<DataDirLock> {
  const file = join(dataDir, LOCK_FILE);
  for (let tries = 0; ; tries++) {
    try {
      const fh = await open(file, 'wx');
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      // Synchronous cleanup is all 'exit' allows; a stale file is taken over anyway.
      const onExit = () => rmSync(file, { force: true });
      process.once('exit', onExit);
      return {
        tookOver: tries > 0,
        async release() {
          process.off('exit', onExit);
          if ((await readFile(file, 'utf8').catch(() => '')).trim() === String(process.pid)) await rm(file, { force: true });
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || tries > 2) throw err;
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && isLiveNode(pid)) {
        throw new UnreachableError(`the data dir ${dataDir} is in use by another portrait-batch (pid ${pid}); stop it first or use another --data-dir.`);
      }
      await rm(file, { force: true }); // its holder is gone: take over
    }
  }
}
