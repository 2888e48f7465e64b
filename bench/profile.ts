// The service's profile: the figure 3 run with `--cpu-prof` on the worker process, its samples summed
// by self time per function and per package/source file, to show where the CPU per row goes.
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runAlone, type Figure } from './lib/figure.ts';
import { round } from './lib/stats.ts';
import { throughputRun } from './lib/throughput.ts';

interface CpuProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}
interface CpuProfile {
  nodes: CpuProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Where a frame's code lives: an npm package, a file of ours, node's internals, or V8 (GC, idle…). */
export function ownerOf(url: string, functionName: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith('node:')) return url.replace(/^node:internal\/(.*?)(\/.*)?$/, 'node:$1');
  const src = /\/(src|bench)\/(.*)$/.exec(url);
  return src ? `${src[1]}/${src[2]}` : url;
}

const frameName = (n: CpuProfileNode) => {
  const owner = ownerOf(n.callFrame.url, n.callFrame.functionName);
  return `${n.callFrame.functionName || '(anonymous)'} (${owner}${n.callFrame.url ? `:${n.callFrame.lineNumber + 1}` : ''})`;
};

export function summarize(profile: CpuProfile): {
  total: number;
  byOwner: [string, number][];
  byFunction: [string, number][];
  /** For each function: the first frame of our own code or of a package (not node's, not native) above it, with time. */
  callers: Map<string, [string, number][]>;
} {
  const parent = new Map<number, CpuProfileNode>();
  for (const n of profile.nodes) {
    for (const c of n.children ?? []) parent.set(c, n);
  }
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0)));
  const byOwner = new Map<string, number>();
  const byFunction = new Map<string, number>();
  const callers = new Map<string, Map<string, number>>();
  let total = 0;
  for (const n of profile.nodes) {
    const us = self.get(n.id) ?? 0;
    if (!us) continue;
    const owner = ownerOf(n.callFrame.url, n.callFrame.functionName);
    if (owner === '(idle)') continue;
    total += us;
    byOwner.set(owner, (byOwner.get(owner) ?? 0) + us);
    const fn = frameName(n);
    byFunction.set(fn, (byFunction.get(fn) ?? 0) + us);
    let up = parent.get(n.id);
    while (up && !/node_modules|\/src\/|\/bench\//.test(up.callFrame.url)) up = parent.get(up.id);
    const callerName = up ? frameName(up) : '(none)';
    const m = callers.get(fn) ?? new Map<string, number>();
    m.set(callerName, (m.get(callerName) ?? 0) + us);
    callers.set(fn, m);
  }
  const top = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  return { total, byOwner: top(byOwner), byFunction: top(byFunction), callers: new Map([...callers].map(([k, m]) => [k, top(m)])) };
}

export const figure: Figure = {
  id: 'profile',
  title: 'Profile of the worker process',
  method:
    'the figure 3 run with `node --cpu-prof` on the worker process; self time of every sample summed per npm package / source file and per function (idle excluded; start-up — module loading and tsx compiling — included, so small runs overstate it).',
  targets: [],
  async run(ctx) {
    const rows = ctx.quick ? 500 : 5000;
    const dir = join(ctx.dir, 'cpu-prof');
    await mkdir(dir, { recursive: true });
    const r = await throughputRun(ctx, rows, 1, ['--cpu-prof', '--cpu-prof-dir', dir]);
    const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'));
    if (!files.length) throw new Error('the worker wrote no CPU profile');
    const s = summarize(JSON.parse(await readFile(join(dir, files[0]!), 'utf8')) as CpuProfile);
    const pct = (us: number) => `${round((100 * us) / s.total, 1)}%`;
    const perRow = (us: number) => round(us / 1000 / r.completed, 3);
    const table = [
      `Worker CPU in the profile: ${round(s.total / 1e6, 2)} s for ${r.completed} rows (${perRow(s.total)} ms/row, start-up included).`,
      '',
      '| by package / file (self time) | share | ms/row |',
      '| --- | ---: | ---: |',
      ...s.byOwner.slice(0, 15).map(([k, v]) => `| ${k} | ${pct(v)} | ${perRow(v)} |`),
      '',
      '| top functions (self time) | share | nearest package / own caller |',
      '| --- | ---: | --- |',
      ...s.byFunction.slice(0, 20).map(([k, v]) => {
        const c = (s.callers.get(k) ?? []).slice(0, 2).map(([name, us]) => `\`${name}\` ${pct(us)}`).join(', ');
        return `| \`${k}\` | ${pct(v)} | ${c} |`;
      }),
    ].join('\n');
    return { json: {}, table, setup: `${rows} rows, as figure 3 (one worker process, profiled).` };
  },
};

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
