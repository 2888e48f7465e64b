// What a process costs, read from /proc (Linux): CPU time (user + system) and resident memory, so the
// service's processes are measured alone, whatever else runs on the machine.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

let ticksPerSecond: number | undefined;

function clockTicks(): number {
  if (ticksPerSecond === undefined) {
    try {
      ticksPerSecond = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      ticksPerSecond = 100;
    }
  }
  return ticksPerSecond;
}

/** CPU milliseconds (utime + stime) a live process has used so far; 0 once it is gone. */
export function cpuMs(pid: number | undefined): number {
  if (!pid) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicks();
  } catch {
    return 0;
  }
}

/** The process ids of a live process's children, grandchildren… (from /proc/<pid>/task/<tid>/children). */
export function descendants(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    let children = '';
    try {
      children = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
    } catch {
      continue;
    }
    for (const c of children.split(' ').filter(Boolean).map(Number)) out.push(c, ...descendants(c));
  }
  return out;
}

/** CPU milliseconds of a process and every process under it (a cluster primary and its workers) while they live. */
export function treeCpuMs(pid: number): number {
  return [pid, ...descendants(pid)].reduce((ms, p) => ms + cpuMs(p), 0);
}

/** Resident and peak resident memory of a live process, in MiB. */
export function memoryMb(pid: number): { rss: number; peak: number } {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? 0);
    return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 };
  } catch {
    return { rss: 0, peak: 0 };
  }
}

/** CPU of several processes between two moments. */
export class CpuMeter {
  private readonly start = new Map<string, number>();
  constructor(private readonly pids: () => Record<string, number | undefined>) {
    for (const [name, pid] of Object.entries(pids())) this.start.set(name, cpuMs(pid));
  }

  /** CPU ms each process used since the meter was made. */
  read(): Record<string, number> {
    return Object.fromEntries(Object.entries(this.pids()).map(([name, pid]) => [name, cpuMs(pid) - (this.start.get(name) ?? 0)]));
  }
}

export function loadAverage(): number {
  try {
    return Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);
  } catch {
    return NaN;
  }
}
