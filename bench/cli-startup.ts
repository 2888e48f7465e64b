// Figure 9: CLI start-up — how long a command takes to answer, and what a long-running role holds once
// it is up and idle, before and after the build (issue 19). Before: the tsx launcher of the last commit
// whose bin/portrait-batch.js compiled src/ at every start (extracted with `git archive`, sharing this
// checkout's node_modules). After: this checkout's bin/portrait-batch.js running dist/ (`npm run build`).
// The two are measured pair by pair, interleaved, so a busy machine slows both alike.
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, symlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../src/core/config.ts';
import { createPortraitBatch } from '../src/index.ts';
import { freePort } from '../src/local/ports.ts';
import { startRedisServer } from '../src/local/redisServer.ts';
import { S3RVER_CREDENTIALS } from '../src/local/s3Server.ts';
import { loadAverage, memoryMb } from './lib/proc.ts';
import { runAlone, type Figure } from './lib/figure.ts';
import { round } from './lib/stats.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const MANIFEST = join(ROOT, 'examples', 'faces.csv');
const TIME = '/usr/bin/time';

/** The last commit whose launcher ran src/ through tsx: the parent of the one that made it run dist/. */
function beforeCommit(): string {
  const made = execFileSync('git', ['log', '--format=%H', '-S', 'dist/cli.js', '--', 'bin/portrait-batch.js'], { cwd: ROOT, encoding: 'utf8' }).trim().split('\n').pop();
  if (!made) throw new Error('no commit of bin/portrait-batch.js mentions dist/cli.js: nothing to compare with');
  return execFileSync('git', ['rev-parse', '--short', `${made}^`], { cwd: ROOT, encoding: 'utf8' }).trim();
}

/** That commit's files in a folder of their own, with this checkout's node_modules (tsx included). */
async function checkoutBefore(dir: string, commit: string): Promise<string> {
  const tree = join(dir, `before-${commit}`);
  await mkdir(tree, { recursive: true });
  execFileSync('sh', ['-c', `git archive ${commit} | tar -x -C "${tree}"`], { cwd: ROOT });
  await symlink(join(ROOT, 'node_modules'), join(tree, 'node_modules'), 'dir');
  return tree;
}

interface Sample {
  seconds: number;
  /** user + system CPU seconds (from /usr/bin/time when the machine has it). */
  cpu: number | null;
  code: number | null;
}

/** One command from start to exit: wall seconds, CPU seconds and its exit code. */
function timeCommand(bin: string, args: string[], env: NodeJS.ProcessEnv): Promise<Sample> {
  const withTime = existsSync(TIME);
  const argv = withTime ? [TIME, '-f', 'cpu %U %S', process.execPath, bin, ...args] : [process.execPath, bin, ...args];
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.once('error', reject);
    child.once('close', (code) => {
      const seconds = (performance.now() - t0) / 1000;
      const cpu = /cpu ([\d.]+) ([\d.]+)\s*$/.exec(err);
      // /usr/bin/time exits with the command's code, and says so on a line of its own.
      const exited = /Command exited with non-zero status (\d+)/.exec(err);
      resolve({ seconds, cpu: cpu ? Number(cpu[1]) + Number(cpu[2]) : null, code: exited ? Number(exited[1]) : code });
    });
  });
}

/** A long-running role started, given time to settle once it says it is up, its RSS read, then stopped. */
function idleRss(bin: string, role: 'worker' | 'webhook', env: NodeJS.ProcessEnv, settleMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [bin, role], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    const ready = role === 'worker' ? /workers running/ : /webhook receiver listening/;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${role} (${bin}) did not come up within 120 s:\n${err}`));
    }, 120_000);
    child.stderr.on('data', (d: Buffer) => {
      const was = ready.test(err);
      err += d.toString();
      if (was || !ready.test(err)) return;
      // Up: the modules are loaded and the connections open. Idle for a moment, then read its RSS.
      setTimeout(() => {
        const { rss } = memoryMb(child.pid!);
        clearTimeout(timer);
        child.once('close', () => resolve(rss));
        child.kill('SIGTERM');
      }, settleMs);
    });
    child.once('close', (code) => {
      if (!ready.test(err)) {
        clearTimeout(timer);
        reject(new Error(`${role} (${bin}) exited (${code}) before it was up:\n${err}`));
      }
    });
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

interface Case {
  label: string;
  key: string;
  args: string[];
  /** Wall-clock target, seconds (after). */
  target: number;
}

export const figure: Figure = {
  id: 'cli-startup',
  title: '9. CLI start-up',
  method:
    "each command run as a user runs it (`node bin/portrait-batch.js …`, a fresh process, from start to exit; CPU = user + system from /usr/bin/time), before and after measured pair by pair, interleaved: **before** = the tsx launcher of the last commit before the build (its files extracted with `git archive`, this checkout's node_modules), which compiles src/ at every start and whose cli.ts imports every command's modules; **after** = this checkout, built (`npm run build`): bin runs dist/, each command imports what it uses. `status <id>` asks a redis-server of the bench's own about a recorded run of examples/faces.csv; `run --dry-run` reads that 13-row manifest. Idle RSS: `worker` and `webhook` started against that Redis and the bench's s3rver, their RSS (VmRSS) read 3 s after they say they are up, then stopped. Medians.",
  targets: [
    { key: 'cliHelpSeconds', label: 'CLI `--help` seconds (compiled)', test: (v) => v < 0.3, text: '< 0.3' },
    { key: 'cliSchedulesHelpSeconds', label: 'CLI `schedules --help` seconds (compiled)', test: (v) => v < 0.3, text: '< 0.3' },
    { key: 'cliStatusSeconds', label: 'CLI `status <id>` seconds, Redis up (compiled)', test: (v) => v < 0.6, text: '< 0.6' },
    { key: 'cliDryRunSeconds', label: 'CLI `run --dry-run` of 13 rows, seconds (compiled)', test: (v) => v < 0.8, text: '< 0.8' },
    { key: 'workerIdleRssSavedMb', label: '`worker` idle RSS, MB below before', test: (v) => v >= 30, text: '≥ 30' },
    { key: 'webhookIdleRssSavedMb', label: '`webhook` idle RSS, MB below before', test: (v) => v >= 30, text: '≥ 30' },
  ],
  async run(ctx) {
    const n = ctx.quick ? 3 : 10;
    const rssN = ctx.quick ? 2 : 5;
    // After = the built checkout: bin/ runs dist/ only when it is newer than every source.
    execFileSync(process.execPath, [join(ROOT, 'scripts', 'build.mjs'), '--if-stale'], { stdio: 'inherit' });
    const commit = beforeCommit();
    const before = join(await checkoutBefore(ctx.dir, commit), 'bin', 'portrait-batch.js');
    const after = join(ROOT, 'bin', 'portrait-batch.js');

    const stack = await ctx.stack();
    const redis = await startRedisServer({ dir: join(ctx.dir, 'cli-startup-redis') });
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      ...S3RVER_CREDENTIALS,
      REDIS_URL: redis.url,
      S3_ENDPOINT: stack.s3.url,
      S3_FORCE_PATH_STYLE: 'true',
      S3_BUCKET: 'bench-cli-startup',
      FAL_KEY: 'bench-key',
      // Nothing is submitted: the roles only start.
      FAL_QUEUE_URL: 'http://127.0.0.1:9',
      WEBHOOK_SECRET: 'b'.repeat(64),
      WEBHOOK_PORT: String(await freePort()),
      ADMIN_PORT: '0',
      ADMIN_HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
    };
    const pb = createPortraitBatch(loadConfig(env), { name: 'bench' });
    const rows: string[] = [];
    const json: Record<string, number | null> = {};
    const notes: string[] = [];
    try {
      await pb.context.storage.ensureBucket();
      const { runId } = await pb.startRun(MANIFEST, { runId: 'bench-cli-startup' });
      const cases: Case[] = [
        { label: '`--help`', key: 'cliHelpSeconds', args: ['--help'], target: 0.3 },
        { label: '`schedules --help`', key: 'cliSchedulesHelpSeconds', args: ['schedules', '--help'], target: 0.3 },
        { label: '`status <id>`, Redis up', key: 'cliStatusSeconds', args: ['status', runId], target: 0.6 },
        { label: '`run --dry-run` examples/faces.csv (13 rows)', key: 'cliDryRunSeconds', args: ['run', '--dry-run', MANIFEST], target: 0.8 },
      ];
      rows.push(
        `| command | before: wall s | after: wall s | after / before | before: CPU s | after: CPU s | target (after, wall) | met |`,
        '| --- | ---: | ---: | ---: | ---: | ---: | --- | --- |',
      );
      const loads: number[] = [loadAverage()];
      for (const c of cases) {
        const b: Sample[] = [];
        const a: Sample[] = [];
        for (let i = 0; i < n; i++) {
          b.push(await timeCommand(before, c.args, env));
          a.push(await timeCommand(after, c.args, env));
        }
        for (const [name, s] of [['before', b], ['after', a]] as const) {
          const bad = s.find((x) => x.code !== 0);
          if (bad) throw new Error(`${name}: ${c.args.join(' ')} exited ${bad.code}`);
        }
        loads.push(loadAverage());
        const [bw, aw] = [median(b.map((x) => x.seconds)), median(a.map((x) => x.seconds))];
        const cpu = (s: Sample[]) => (s.every((x) => x.cpu !== null) ? String(round(median(s.map((x) => x.cpu!)), 2)) : '—');
        json[c.key] = round(aw, 2);
        rows.push(`| ${c.label} | ${round(bw, 2)} | **${round(aw, 2)}** | ${round(aw / bw, 2)} | ${cpu(b)} | ${cpu(a)} | < ${c.target} | ${aw < c.target ? 'yes' : '**no**'} |`);
        ctx.log(`  ${c.args.join(' ')}: before ${round(bw, 2)} s, after ${round(aw, 2)} s (load ${loads[loads.length - 1]})`);
      }
      rows.push('', '| role | before: idle RSS MB | after: idle RSS MB | below before | target |', '| --- | ---: | ---: | ---: | --- |');
      for (const role of ['worker', 'webhook'] as const) {
        const b: number[] = [];
        const a: number[] = [];
        for (let i = 0; i < rssN; i++) {
          b.push(await idleRss(before, role, env, 3000));
          a.push(await idleRss(after, role, env, 3000));
        }
        loads.push(loadAverage());
        const [bm, am] = [median(b), median(a)];
        json[`${role}IdleRssSavedMb`] = Math.round(bm - am);
        rows.push(`| \`${role}\` | ${Math.round(bm)} | **${Math.round(am)}** | ${Math.round(bm - am)} | ≥ 30 below |`);
        ctx.log(`  ${role} idle RSS: before ${Math.round(bm)} MB, after ${Math.round(am)} MB`);
      }
      notes.push(`1-minute load average during the pairs: ${Math.min(...loads)}–${Math.max(...loads)} (2 cores: above 2, other work competed for the CPU and every wall time here is longer than on an idle machine; the CPU column is less sensitive to it).`);
    } finally {
      await pb.close();
      await redis.stop();
    }
    const beforeLauncher = (await readFile(before, 'utf8')).includes('tsx') ? 'tsx launcher' : 'launcher';
    return {
      json,
      table: rows.join('\n'),
      setup: `${n} runs of each command before and after (${rssN} starts of each role for RSS), interleaved; before = commit ${commit} (${beforeLauncher}), after = this checkout's dist/.`,
      notes,
    };
  },
};

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
