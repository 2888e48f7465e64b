// `portrait-batch chaos`: the local stack with every fault on — fal 429/5xx, submits accepted whose
// answer is lost, dropped, duplicated and delayed webhooks, model errors, lost requests, failing
// image downloads, failing S3 writes — the webhook receiver and the workers in their own processes,
// each SIGKILLed twice mid-run and restarted. Then the run is checked from S3 and Redis (auditRun),
// not from anyone's counters.
// `chaos --faults a,b,…`: one run per named fault, each breaking one thing the service depends on
// (src/local/stackFaults.ts) part-way through, with no other fault on; each is reported with its
// audit, what fal was paid for beyond the attempts recorded, and the log lines it caused.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { pipeline, type Readable } from 'node:stream';
import { parse } from 'csv-parse';
import sharp from 'sharp';
import { auditRun, type AuditResult } from './audit.ts';
import { loadConfig } from './core/config.ts';
import type { Context } from './core/context.ts';
import type { RunRecord } from './core/rowState.ts';
import type { EmulatorOptions } from './emulator/index.ts';
import { createSigningKey } from './emulator/keys.ts';
import { startFaultProxy } from './local/faultProxy.ts';
import { StackFaults } from './local/stackFaults.ts';
import type { FaultName } from './chaosFaults.ts';
import { createPortraitBatch } from './index.ts';
import { startLocalStack } from './local/stack.ts';
import { waitForRun } from './producer/wait.ts';

export { FAULT_NAMES, type FaultName } from './chaosFaults.ts';

export interface ChaosOptions {
  rows?: number;
  /** Kills of each of the worker and the webhook receiver (the `kill` fault, and the run without --faults). */
  killsPerRole?: number;
  timeoutMs?: number;
  dataDir?: string;
  log?: (line: string) => void;
}

export interface ChaosResult {
  rows: number;
  completed: number;
  failed: number;
  lost: number;
  duplicated: number;
  extraSubmits: number;
  /** Attempts fal may have charged whose webhook never came (see AuditResult.ambiguousSubmits). */
  ambiguousSubmits: number;
  kills: number;
  seconds: number;
  audit: AuditResult;
  brokenFaces: BrokenFaces;
}

export interface FaultOptions extends ChaosOptions {
  faults: FaultName[];
  /** How long each outage lasts (redis-kill, redis-stall, s3-outage, fal-outage, fal-restart, receiver-outage); default 15 s. */
  faultMs?: number;
  /** How much of the AOF redis-crash loses; default 1 s. */
  crashLostMs?: number;
  /** Where in the run the fault starts (share of rows ended); default 0.3. */
  at?: number;
}

/** One fault's run. */
export interface FaultReport {
  fault: FaultName;
  rows: number;
  completed: number;
  failed: number;
  lost: number;
  duplicated: number;
  /** fal requests beyond the attempts recorded: generations paid twice. */
  extraPaid: number;
  /** Requests a restarted fal forgot (resubmitted as new attempts: counted apart, not as extra paid). */
  falForgot: number;
  /** Requests fal no longer knew (404), resubmitted by the service as new attempts (the run's resubmittedForgotten). */
  resubmittedForgotten: number;
  ambiguousSubmits: number;
  seconds: number;
  /** How long the fault lasted. */
  faultSeconds: number;
  /** Log lines of the worker and receiver from the fault's start to 5 s after it ended, per second. */
  logLinesPerSecond: number;
  /** Warning and error lines in that window. */
  warnings: number;
  /** Among them, the lines saying a dependency is unreachable (the outage's warning; at most one wanted). */
  outageWarnings: number;
  /** And those saying it is back (at most one wanted). */
  recoveryWarnings: number;
  problems: string[];
}

export const CHAOS_FAULTS: NonNullable<EmulatorOptions['faults']> = {
  submitErrorRate: 0.1,
  webhookDropRate: 0.3,
  webhookDuplicateRate: 0.2,
  webhookDelayMs: { min: 0, max: 400 },
  modelErrorRate: 0.05,
  lostRequestRate: 0.03,
  imageDownloadFailureRate: 0.1,
  ambiguousSubmitRate: 0.03,
  // Model errors that fail their row at once (fal's runner crashes above are tried again, unbilled).
  errorRates: { image_load_error: 0.02, content_policy_violation: 0.01 },
};
export const CHAOS_S3_PUT_FAILURE_RATE = 0.05;

const CLI = fileURLToPath(new URL('../bin/portrait-batch.js', import.meta.url));

/** After a fault ends, its log lines are counted this much longer (the recovery's lines). */
const LOG_SETTLE_MS = 5000;

type Role = 'webhook' | 'worker';

/** What a pass can do to its stack while the run goes. */
interface PassControl {
  faults: StackFaults;
  kill(role: Role): void;
  stop(role: Role): void;
  start(role: Role): void;
  log: (line: string) => void;
}

interface Step {
  /** Share of rows ended at which it starts. */
  at: number;
  act(c: PassControl): Promise<void>;
}

interface PassResult {
  audit: AuditResult;
  seconds: number;
  kills: number;
  falForgot: number;
  resubmittedForgotten: number;
  /** Start and end (ms) of each step, and the log file's size at those moments. */
  windows: { start: number; end: number; fromByte: number; toByte: number }[];
  /** Log lines within the windows (to LOG_SETTLE_MS after each), warning or error lines among them, and the windows' seconds. */
  logged: { lines: number; warnings: number; outageWarnings: number; recoveryWarnings: number; seconds: number };
  brokenFaces: BrokenFaces;
}

/** The rows whose face fal cannot decode, and how many of them the report shows failed with image_load_error. */
export interface BrokenFaces {
  rows: number;
  failedToLoad: number;
}

/** The chaos run without --faults: every fal and S3 fault on at random, the worker and the receiver SIGKILLed twice each. */
export async function runChaos(opts: ChaosOptions = {}): Promise<ChaosResult> {
  const rows = opts.rows ?? 2000;
  const started = Date.now();
  const res = await chaosPass({ ...opts, rows, randomFaults: true, steps: killSteps(opts.killsPerRole ?? 2) });
  return {
    rows,
    completed: res.audit.completed,
    failed: res.audit.failed,
    lost: res.audit.lost,
    duplicated: res.audit.duplicated,
    extraSubmits: res.audit.extraSubmits,
    ambiguousSubmits: res.audit.ambiguousSubmits,
    kills: res.kills,
    seconds: Math.round((Date.now() - started) / 100) / 10,
    audit: res.audit,
    brokenFaces: res.brokenFaces,
  };
}

/** `chaos --faults`: one run per fault, each with that fault alone. */
export async function runChaosFaults(opts: FaultOptions): Promise<FaultReport[]> {
  const rows = opts.rows ?? 500;
  const ms = opts.faultMs ?? 15_000;
  const at = opts.at ?? 0.3;
  const log = opts.log ?? (() => undefined);
  const reports: FaultReport[] = [];
  for (const fault of opts.faults) {
    log(`chaos: ${fault}, ${rows} rows`);
    const started = Date.now();
    const steps = fault === 'kill' ? killSteps(opts.killsPerRole ?? 2) : [{ at, act: faultStep(fault, ms, opts.crashLostMs ?? 1000) }];
    const res = await chaosPass({ ...opts, rows, randomFaults: false, steps, dataDir: opts.dataDir && join(opts.dataDir, fault) });
    const { lines, warnings, outageWarnings, recoveryWarnings, seconds } = res.logged;
    reports.push({
      fault,
      rows,
      completed: res.audit.completed,
      failed: res.audit.failed,
      lost: res.audit.lost,
      duplicated: res.audit.duplicated,
      extraPaid: res.audit.extraSubmits,
      falForgot: res.falForgot,
      resubmittedForgotten: res.resubmittedForgotten,
      ambiguousSubmits: res.audit.ambiguousSubmits,
      seconds: Math.round((Date.now() - started) / 100) / 10,
      faultSeconds: Math.round(res.windows.reduce((t, w) => t + w.end - w.start, 0) / 100) / 10,
      logLinesPerSecond: seconds ? Math.round((lines / seconds) * 10) / 10 : 0,
      warnings,
      outageWarnings,
      recoveryWarnings,
      problems: res.audit.problems,
    });
  }
  return reports;
}

function killSteps(killsPerRole: number): Step[] {
  // Kill points spread over the run, alternating roles: SIGKILL, then restart at once.
  return Array.from({ length: killsPerRole * 2 }, (_, i) => ({
    at: (i + 1) / (killsPerRole * 2 + 1),
    act: async (c: PassControl) => {
      const role: Role = i % 2 === 0 ? 'worker' : 'webhook';
      c.kill(role);
      c.start(role);
    },
  }));
}

function faultStep(fault: Exclude<FaultName, 'kill'>, ms: number, crashLostMs: number): Step['act'] {
  return async (c) => {
    switch (fault) {
      case 'redis-kill':
        return c.faults.redisKill(ms);
      case 'redis-crash':
        return c.faults.redisCrash(crashLostMs, 500);
      case 'redis-stall':
        return c.faults.redisStall(ms);
      case 's3-outage':
        return c.faults.s3Outage(ms);
      case 'fal-outage':
        return c.faults.falOutage(ms);
      case 'fal-restart':
        return c.faults.falOutage(ms, true);
      case 'receiver-outage':
        c.kill('webhook');
        await sleep(ms);
        return c.start('webhook');
    }
  };
}

async function chaosPass(opts: ChaosOptions & { rows: number; randomFaults: boolean; steps: Step[] }): Promise<PassResult> {
  const { rows } = opts;
  const log = opts.log ?? (() => undefined);
  const started = Date.now();
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'pb-chaos-')));
  // The emulator's signing key stays the same across its restarts, as fal's does.
  const emulatorOptions: EmulatorOptions = {
    sizeScale: 0.0625,
    latencyMs: { min: 20, max: 200 },
    slots: 32,
    seed: 7,
    faults: opts.randomFaults ? CHAOS_FAULTS : {},
    signingKey: createSigningKey(),
  };
  const stack = await startLocalStack({
    dataDir,
    env: {},
    persistentRedis: true,
    defaults: {
      RECONCILE_INTERVAL_MS: '500',
      RECONCILE_GRACE_MS: '3000',
      JOB_LOCK_MS: '4000',
      SUBMIT_CONCURRENCY: '16',
      SUBMIT_RATE_PER_SECOND: '500',
      STORE_CONCURRENCY: '16',
      STORE_MAX_TRIES: '10',
      MAX_ATTEMPTS: '5',
      RUN_WINDOW: '400',
      FAILURE_THRESHOLD_RATIO: '1',
      // The fault runs count every line the processes write; the random-fault run only what goes wrong.
      LOG_LEVEL: opts.randomFaults ? 'warn' : 'info',
      S3_BUCKET: 'portrait-chaos',
    },
    emulator: emulatorOptions,
  });
  const s3Proxy = await startFaultProxy({ target: stack.cfg.S3_ENDPOINT!, failureRate: opts.randomFaults ? CHAOS_S3_PUT_FAILURE_RATE : 0 });
  const faults = new StackFaults({
    redis: stack.redis!,
    redisDir: join(dataDir, 'redis'),
    s3: stack.s3 && { server: stack.s3, dir: join(dataDir, 's3'), bucket: stack.cfg.S3_BUCKET, proxy: s3Proxy },
    emulator: stack.emulator && { server: stack.emulator, options: emulatorOptions, stateDir: join(dataDir, 'emulator') },
  });
  const env = { ...process.env, ...stack.env, S3_ENDPOINT: s3Proxy.url };
  const cfg = loadConfig(env);
  const pb = createPortraitBatch(cfg, { name: 'chaos' });
  const ctx = pb.context;
  const logFile = join(dataDir, 'chaos.log');
  const logFd = openSync(logFile, 'a');
  const children = new Map<string, ChildProcess>();
  const startRole = (role: Role) => {
    const child = spawn(process.execPath, [CLI, role], { env, stdio: ['ignore', logFd, logFd] });
    children.set(role, child);
    return child;
  };
  const waitHealthy = async () => {
    // A loaded machine takes a while to start a process (tsx compiles it first).
    for (let i = 0; i < 600; i++) {
      if (await fetch(`http://127.0.0.1:${cfg.WEBHOOK_PORT}/healthz`).then((r) => r.ok, () => false)) return;
      await sleep(100);
    }
    throw new Error('webhook receiver did not come up');
  };
  let kills = 0;
  const control: PassControl = {
    faults,
    log,
    kill(role) {
      children.get(role)?.kill('SIGKILL');
      kills++;
    },
    stop(role) {
      children.get(role)?.kill('SIGTERM');
    },
    start: (role) => void startRole(role),
  };
  const windows: PassResult['windows'] = [];
  const logSize = () => statSync(logFile).size;
  try {
    await ctx.storage.ensureBucket();
    const manifest = await writeChaosManifest(join(dataDir, 'manifest'), rows, opts.randomFaults);
    startRole('webhook');
    startRole('worker');
    await waitHealthy();

    // The run is produced by the worker process too, so the kills land on the producer as well.
    const runId = `chaos-${rows}-${Date.now().toString(36)}`;
    await pb.startRun(manifest, { runId });
    log(`chaos run ${runId}: ${rows} rows`);
    const plan = [...opts.steps];
    // One step at a time, in the background: a step that breaks Redis also stalls the progress reads.
    let acting: Promise<void> = Promise.resolve();
    let failedStep: unknown;
    const deadline = Date.now() + (opts.timeoutMs ?? 30 * 60_000);
    await waitThroughOutages(ctx, runId, deadline, {
      onProgress: (r) => {
        const done = (r.completed + r.failed + r.canceled + r.rejected) / rows;
        while (plan.length && done >= plan[0]!.at) {
          const step = plan.shift()!;
          const what = `at ${Math.round(done * 100)}% (${r.completed} completed, ${r.failed} failed)`;
          acting = acting.then(async () => {
            const start = Date.now();
            const fromByte = logSize();
            log(`  fault ${what}`);
            try {
              await step.act(control);
            } catch (err) {
              failedStep ??= err;
            }
            const end = Date.now();
            windows.push({ start, end, fromByte, toByte: fromByte });
          });
        }
      },
    });
    await acting;
    if (failedStep) throw failedStep;
    // A fault still going when the run ended (a Redis crash taking back the run's last second) may
    // have reopened it: the audit waits for the run as Redis has it now.
    await waitThroughOutages(ctx, runId, deadline);
    if (plan.length) log(`  ${plan.length} fault(s) not reached: the run ended first`);
    // The log lines of each window: up to LOG_SETTLE_MS after the fault ended (or the run's end).
    await sleep(Math.max(0, ...windows.map((w) => w.end + LOG_SETTLE_MS - Date.now())));
    for (const w of windows) w.toByte = logSize();
    const audit = await auditRun(ctx, runId, { acceptedByRow: faults.acceptedByRow(), verifyHashes: true }).catch((err: Error) =>
      Promise.reject(new Error(`audit failed: ${err.name}: ${err.message}`)),
    );
    const logged = await countLogLines(logFile, windows);
    const resubmittedForgotten = (await ctx.rows.getRun(runId))?.resubmittedForgotten ?? 0;
    const brokenFaces = opts.randomFaults ? await brokenFaceOutcomes(await pb.report(runId), rows) : { rows: 0, failedToLoad: 0 };
    return { audit, seconds: Math.round((Date.now() - started) / 100) / 10, kills, falForgot: faults.falForgot, resubmittedForgotten, windows, logged, brokenFaces };
  } finally {
    for (const c of children.values()) c.kill('SIGTERM');
    await Promise.all([...children.values()].map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
    closeSync(logFd);
    await pb.close();
    await s3Proxy.close();
    await faults.stop();
    await stack.stop();
    if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
  }
}

/**
 * waitForRun, through the faults: this process reads the run from the Redis a fault may have stopped or
 * stalled, so a read that fails (a command timeout) is tried again until the pass's deadline.
 */
async function waitThroughOutages(ctx: Context, runId: string, deadline: number, opts: { onProgress?: (r: RunRecord) => void } = {}): Promise<void> {
  for (;;) {
    try {
      await waitForRun(ctx, runId, { timeoutMs: Math.max(1, deadline - Date.now()), intervalMs: 250, onProgress: opts.onProgress });
      return;
    } catch (err) {
      if (Date.now() >= deadline || /does not exist|did not finish within/.test((err as Error).message)) throw err;
      await sleep(1000);
    }
  }
}

/** Lines (and warning or error lines) the processes logged within a pass's fault windows. */
async function countLogLines(logFile: string, windows: PassResult['windows']): Promise<PassResult['logged']> {
  let lines = 0;
  let warnings = 0;
  let outageWarnings = 0;
  let recoveryWarnings = 0;
  let ms = 0;
  const fh = await open(logFile, 'r');
  try {
    for (const w of windows) {
      ms += w.end - w.start + LOG_SETTLE_MS;
      const buf = Buffer.alloc(Math.max(0, w.toByte - w.fromByte));
      await fh.read(buf, 0, buf.length, w.fromByte);
      for (const line of buf.toString('utf8').split('\n')) {
        if (!line.trim()) continue;
        lines++;
        const level = /"level":(\d+)/.exec(line)?.[1];
        // The CLI's own plain lines (a process started, stopped) are not warnings; an error or a stack is.
        if (level === undefined ? /^error|Error\b|^\s+at /.test(line) : Number(level) >= 40) warnings++;
        if (level === undefined || Number(level) < 40) continue;
        // Every process of the stack writes to this one log: the outage said once is one line here.
        const msg = /"msg":"((?:Redis|S3|fal) [^"]*)"/.exec(line)?.[1] ?? '';
        if (/^\S+ (unreachable|still unreachable)\b/.test(msg)) outageWarnings++;
        else if (/^\S+ reachable again\b/.test(msg)) recoveryWarnings++;
      }
    }
  } finally {
    await fh.close();
  }
  return { lines, warnings, outageWarnings, recoveryWarnings, seconds: ms / 1000 };
}

/** N rows over 8 local faces, with a mix of sizes, formats and image counts. */
/** Rows of the chaos manifest whose face is a PNG fal cannot decode: one in every 50. */
function isBrokenFaceRow(i: number): boolean {
  return i % 50 === 25;
}

/** How many of the first `rows` rows of the chaos manifest have the broken face. */
function brokenFaceRows(rows: number): number {
  let n = 0;
  for (let i = 0; i < rows; i++) if (isBrokenFaceRow(i)) n++;
  return n;
}

async function brokenFaceOutcomes(report: Readable, rows: number): Promise<BrokenFaces> {
  let failedToLoad = 0;
  const parser = parse({ columns: true });
  // Through pipeline: a report stream that fails ends the parser with its error, and the loop throws it.
  pipeline(report, parser, () => undefined);
  for await (const r of parser as AsyncIterable<Record<string, string>>) {
    const i = Number(/^c(\d+)$/.exec(r.id ?? '')?.[1] ?? -1);
    if (i >= 0 && isBrokenFaceRow(i) && r.status === 'failed' && r.error_type === 'image_load_error') failedToLoad++;
  }
  return { rows: brokenFaceRows(rows), failedToLoad };
}

async function writeChaosManifest(dir: string, rows: number, brokenFaces: boolean): Promise<string> {
  await mkdir(join(dir, 'faces'), { recursive: true });
  for (let i = 0; i < 8; i++) {
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="hsl(${i * 45},40%,80%)"/><circle cx="32" cy="34" r="22" fill="hsl(${i * 45 + 20},50%,65%)"/></svg>`;
    await sharp(Buffer.from(svg)).png().toFile(join(dir, 'faces', `f${i}.png`));
  }
  // With the random faults, a PNG cut after its header: it looks like an image to every sniffer, but
  // fal's runner cannot decode it (image_load_error): its rows must fail, with that reason, whatever
  // the random faults drew, so the run's failures are certain, not a draw. The fault runs have none
  // (a row failed there is the service's fault).
  const whole = await readFile(join(dir, 'faces', 'f0.png'));
  await writeFile(join(dir, 'faces', 'broken.png'), whole.subarray(0, 60));
  const lines = ['id,face_url,num_images,output_format,image_size'];
  for (let i = 0; i < rows; i++) {
    const face = brokenFaces && isBrokenFaceRow(i) ? 'broken' : `f${i % 8}`;
    lines.push(`c${i},faces/${face}.png,${(i % 2) + 1},${['png', 'jpeg', 'webp'][i % 3]},${i % 4 === 0 ? 'portrait_4_3' : ''}`);
  }
  const file = join(dir, 'chaos.csv');
  await writeFile(file, `${lines.join('\n')}\n`);
  return file;
}
