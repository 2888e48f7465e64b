// The service's profile: the figure 3 run with `--cpu-prof` on the worker process, its samples summed
// by self time per function and per package/source file, to show where the CPU per row goes.
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { runAlone, type Figure } from './lib/figure.ts';
import { round } from './lib/stats.ts';
import { throughputRun } from './lib/throughput.ts';
import { webhookBurst } from './webhook.ts';

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

export function summarize(profile: CpuProfile, startMarker: string): {
  total: number;
  byOwner: [string, number][];
  byFunction: [string, number][];
  /** For each function: the first frame of our own code or of a package (not node's, not native) above it, with time. */
  callers: Map<string, [string, number][]>;
} {
  const parent = new Map<number, CpuProfileNode>();
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  for (const n of profile.nodes) {
    for (const c of n.children ?? []) parent.set(c, n);
  }
  // Start-up (module loading, compiling) is not a row's cost: count from the first sample under `startMarker` (a source file).
  const inSubmit = new Map<number, boolean>();
  const isInSubmit = (id: number): boolean => {
    if (!inSubmit.has(id)) {
      const n = parent.get(id);
      const node = byId.get(id);
      inSubmit.set(id, Boolean(node?.callFrame.url.includes(startMarker)) || (n ? isInSubmit(n.id) : false));
    }
    return inSubmit.get(id)!;
  };
  const first = Math.max(0, profile.samples.findIndex((id) => isInSubmit(id)));
  const self = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    if (i >= first) self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
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
  title: 'Profile of the worker process and the webhook receiver',
  method:
    "the figure 3 run with `node --cpu-prof` on the worker process, and figure 4's burst with it on the webhook receiver; self time of every sample from the first submit job (worker) or webhook (receiver) on (start-up — module loading, tsx compiling — left out; idle excluded) summed per npm package / source file and per function, with the nearest frame of a package or of our code above each function. The profiler's own overhead inflates the totals; the shares are what matters.",
  targets: [],
  async run(ctx) {
    const rows = ctx.quick ? 500 : 5000;
    const webhooks = ctx.quick ? 2000 : 20_000;
    const workerDir = join(ctx.dir, 'cpu-prof-worker');
    const hookDir = join(ctx.dir, 'cpu-prof-webhook');
    await mkdir(workerDir, { recursive: true });
    await mkdir(hookDir, { recursive: true });
    const r = await throughputRun(ctx, rows, 1, ['--cpu-prof', '--cpu-prof-dir', workerDir]);
    const worker = await profileTable(workerDir, '/src/worker/submit.ts', r.completed, 'rows', 'row');
    const burst = await webhookBurst(ctx, webhooks, ['--cpu-prof', '--cpu-prof-dir', hookDir]);
    const hook = await profileTable(hookDir, '/src/webhook/app.ts', burst.res['2xx'], 'webhooks', 'webhook');
    return {
      json: {},
      table: ['### Worker process', '', worker, '', '### Webhook receiver', '', hook].join('\n'),
      setup: `worker: ${rows} rows as in figure 3 (one worker process, profiled); webhook receiver: ${webhooks} webhooks as in figure 4 (profiled).`,
    };
  },
};

async function profileTable(dir: string, startMarker: string, units: number, plural: string, unit: string): Promise<string> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'));
  if (!files.length) throw new Error(`no CPU profile was written in ${dir}`);
  const s = summarize(JSON.parse(await readFile(join(dir, files[0]!), 'utf8')) as CpuProfile, startMarker);
  const pct = (us: number) => `${round((100 * us) / s.total, 1)}%`;
  const per = (us: number) => round(us / 1000 / units, 3);
  return [
    `CPU in the profile: ${round(s.total / 1e6, 2)} s for ${units} ${plural} (${per(s.total)} ms/${unit} under the profiler).`,
    '',
    `| by package / file (self time) | share | ms/${unit} |`,
    '| --- | ---: | ---: |',
    ...s.byOwner.slice(0, 15).map(([k, v]) => `| ${k} | ${pct(v)} | ${per(v)} |`),
    '',
    '| top functions (self time) | share | nearest package / own caller |',
    '| --- | ---: | --- |',
    ...s.byFunction.slice(0, 20).map(([k, v]) => {
      const c = (s.callers.get(k) ?? []).slice(0, 2).map(([name, us]) => `\`${name}\` ${pct(us)}`).join(', ');
      return `| \`${k}\` | ${pct(v)} | ${c} |`;
    }),
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
