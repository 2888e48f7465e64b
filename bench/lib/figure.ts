// What every figure script shares: options (--quick, --json), a lazily started stack, the figure's
// result (JSON keys, a table, how it was measured), saving it under bench/results/ and rewriting
// bench/RESULTS.md from every saved figure. Logs go to stderr; stdout holds only the JSON line.
import { execFileSync } from 'node:child_process';
import { mkdtemp, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { cpus, totalmem, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadAverage } from './proc.ts';
import { startBenchStack, type BenchStack } from './stack.ts';

export const BENCH_DIR = fileURLToPath(new URL('..', import.meta.url));
const RESULTS_DIR = join(BENCH_DIR, 'results');

export type JsonFigures = Record<string, number | null>;

export interface Target {
  /** JSON key (or a table label) the target is about. */
  key: string;
  label: string;
  test: (v: number) => boolean;
  text: string;
}

export interface FigureRun {
  /** Keys of the JSON line (the issue's contract) this figure fills. */
  json: JsonFigures;
  /** Markdown table of everything measured. */
  table: string;
  /** Sizes and settings actually used. */
  setup: string;
  notes?: string[];
}

export interface Figure {
  id: string;
  title: string;
  /** How it is measured, for RESULTS.md. */
  method: string;
  targets: Target[];
  run(ctx: BenchContext): Promise<FigureRun>;
}

export interface SavedFigure extends FigureRun {
  id: string;
  targets: { key: string; label: string; text: string; met: boolean | null }[];
  title: string;
  method: string;
  quick: boolean;
  measuredAt: string;
  seconds: number;
  loadBefore: number;
  loadAfter: number;
  /** The last commit that changed src/ when it was measured: the code the figure is about. */
  srcCommit?: string;
}

export interface BenchContext {
  quick: boolean;
  dir: string;
  log: (line: string) => void;
  /** One s3rver shared by the figure's runs, started on first use. */
  stack(): Promise<BenchStack>;
  /** Measurements shared by figures with the same parameters (quick mode reuses runs). */
  memo<T>(key: string, make: () => Promise<T>): Promise<T>;
}

export const log = (line: string) => process.stderr.write(`${line}\n`);

export function parseArgs(argv: string[]): { quick: boolean; json: boolean; names: string[] } {
  return { quick: argv.includes('--quick'), json: argv.includes('--json'), names: argv.filter((a) => !a.startsWith('--')) };
}

export async function createContext(quick: boolean): Promise<BenchContext & { close(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'pb-bench-'));
  let stack: Promise<BenchStack> | undefined;
  const memos = new Map<string, Promise<unknown>>();
  return {
    quick,
    dir,
    log,
    stack: () => (stack ??= startBenchStack(join(dir, 'stack'))),
    memo: <T>(key: string, make: () => Promise<T>) => {
      if (!memos.has(key)) memos.set(key, make());
      return memos.get(key) as Promise<T>;
    },
    async close() {
      if (stack) await (await stack).stop().catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export async function runFigure(fig: Figure, ctx: BenchContext): Promise<SavedFigure> {
  const loadBefore = loadAverage();
  const t0 = Date.now();
  ctx.log(`figure ${fig.id}: ${fig.title}${ctx.quick ? ' (quick)' : ''} — load ${loadBefore}`);
  const res = await fig.run(ctx);
  const saved: SavedFigure = {
    id: fig.id,
    title: fig.title,
    method: fig.method,
    quick: ctx.quick,
    measuredAt: new Date().toISOString(),
    seconds: Math.round((Date.now() - t0) / 100) / 10,
    loadBefore,
    loadAfter: loadAverage(),
    srcCommit: srcCommit(),
    ...res,
    targets: fig.targets.map((t) => {
      const v = res.json[t.key];
      return { key: t.key, label: t.label, text: t.text, met: v === null || v === undefined ? null : t.test(v) };
    }),
  };
  ctx.log(`${res.table}\n${JSON.stringify(res.json)}\n(${saved.seconds} s)`);
  return saved;
}

function srcCommit(): string | undefined {
  try {
    return execFileSync('git', ['log', '-1', '--format=%h', '--', 'src'], { cwd: join(BENCH_DIR, '..'), encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

export async function saveFigure(saved: SavedFigure): Promise<void> {
  await mkdir(RESULTS_DIR, { recursive: true });
  await writeFile(join(RESULTS_DIR, `${saved.id}.json`), `${JSON.stringify(saved, null, 2)}\n`);
}

export function machine(): { cores: number; cpu: string; memoryGiB: number; node: string; redis: string } {
  let redis = 'unknown';
  try {
    redis = /v=(\S+)/.exec(execFileSync('redis-server', ['--version'], { encoding: 'utf8' }))?.[1] ?? redis;
  } catch {
    // not installed: reported as unknown
  }
  return { cores: cpus().length, cpu: cpus()[0]?.model.trim() ?? 'unknown', memoryGiB: Math.round(totalmem() / 2 ** 30), node: process.version, redis };
}

/** Runs one figure on its own (`node --import tsx bench/<figure>.ts [--quick] [--json]`). */
export async function runAlone(fig: Figure, argv = process.argv.slice(2)): Promise<void> {
  const { quick, json } = parseArgs(argv);
  const ctx = await createContext(quick);
  try {
    const saved = await runFigure(fig, ctx);
    if (!quick) {
      await saveFigure(saved);
      await writeResultsMd(FIGURE_ORDER);
    }
    if (json) process.stdout.write(`${JSON.stringify(saved.json)}\n`);
  } finally {
    await ctx.close();
  }
  process.exit(0);
}

/** The figures in RESULTS.md's order (their ids are the file names under bench/). */
export const FIGURE_ORDER = ['fal-calls', 'time', 'service-cost', 'webhook', 'ingest', 'redis', 'store-latency', 'scale-out', 'cli-startup', 'durability', 'profile', 'dashboard-page', 'redis-rejected'];

async function loadSaved(): Promise<Map<string, SavedFigure>> {
  const out = new Map<string, SavedFigure>();
  for (const f of await readdir(RESULTS_DIR).catch(() => [] as string[])) {
    if (!f.endsWith('.json')) continue;
    const s = JSON.parse(await readFile(join(RESULTS_DIR, f), 'utf8')) as SavedFigure;
    out.set(s.id, s);
  }
  return out;
}

/** Hand-written analysis per figure (causes of targets not met, what would fix them): bench/notes/<id>.md. */
async function notesOf(id: string): Promise<string> {
  return (await readFile(join(BENCH_DIR, 'notes', `${id}.md`), 'utf8').catch(() => '')).trim();
}

export async function writeResultsMd(order: string[]): Promise<void> {
  const saved = await loadSaved();
  const m = machine();
  const lines: string[] = [
    '# Benchmarks',
    '',
    `Written by \`npm run bench\` (bench/run.ts; one script per figure under bench/, each runnable alone,`,
    `e.g. \`node --import tsx bench/time.ts\`). Machine: ${m.cores} cores (${m.cpu}), ${m.memoryGiB} GiB, Node ${m.node},`,
    `redis-server ${m.redis}, s3rver; everything on this one machine. Each figure says when it was`,
    'measured and the 1-minute load average before and after it (the machine is shared: a load above',
    `${m.cores} means other work competed for the CPU). Every comparison is a ratio measured in the same run.`,
    'Tests never assert timings.',
    '',
    '## Summary',
    '',
    '| figure | value | target | met |',
    '| --- | ---: | --- | --- |',
  ];
  for (const id of order) {
    const s = saved.get(id);
    for (const t of s?.targets ?? []) {
      const v = s?.json[t.key];
      const shown = v === null || v === undefined ? 'not measured' : String(v);
      lines.push(`| ${t.label} (\`${t.key}\`) | ${shown} | ${t.text} | ${t.met === null ? '—' : t.met ? 'yes' : '**no**'} |`);
    }
  }
  for (const id of order) {
    const s = saved.get(id);
    if (!s) continue;
    lines.push('', `## ${s.title}`, '', `Measured ${s.measuredAt.replace('T', ' ').slice(0, 16)} UTC${s.quick ? ' (--quick sizes)' : ''}, ${s.seconds} s, load ${s.loadBefore} → ${s.loadAfter}${s.srcCommit ? `, src/ as of commit ${s.srcCommit}` : ''}. \`node --import tsx bench/${s.id}.ts\``, '');
    lines.push(`**How:** ${s.method}`, '', `**Setup:** ${s.setup}`, '', s.table);
    if (s.notes?.length) lines.push('', ...s.notes.map((n) => `- ${n}`));
    const notes = await notesOf(id);
    if (notes) lines.push('', notes);
  }
  await writeFile(join(BENCH_DIR, 'RESULTS.md'), `${lines.join('\n')}\n`);
}
