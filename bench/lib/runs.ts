// One measured run of the service (webhook receiver and N worker processes, each its own process) or of
// the baseline script, against an emulator of its own, with the numbers every figure draws from.
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { auditRun, type AuditResult } from '../../src/audit.ts';
import { CONFIG_VARS, loadConfig } from '../../src/core/config.ts';
import { falCalls, type EmulatorStats } from '../../src/emulator/index.ts';
import { Storage } from '../../src/core/s3.ts';
import { createPortraitBatch } from '../../src/index.ts';
import { waitForRun } from '../../src/producer/wait.ts';
import { CpuMeter } from './proc.ts';
import { facePng, writeManifest } from './manifest.ts';
import { serviceEnv, spawnRole, startRunRedis, uploadFace, waitHealthy, type BenchStack, type EmulatorProcess, type RoleProcess } from './stack.ts';

const BASELINE = fileURLToPath(new URL('../baseline.ts', import.meta.url));

/** Whether this checkout has poll mode (RESULT_DELIVERY); figure 1's poll half is null without it. */
export const HAS_POLL_MODE = 'RESULT_DELIVERY' in CONFIG_VARS;

/** Every HTTP call a client made to fal: submit, status, result, cancel, file GETs, storage. */
export function allFalCalls(s: EmulatorStats): number {
  return falCalls(s) + s.fileGets + s.storageInitiates + s.storageUploads;
}

export function statsDelta(after: EmulatorStats, before: EmulatorStats): EmulatorStats {
  const out = { ...after } as Record<string, unknown>;
  for (const [k, v] of Object.entries(after)) if (typeof v === 'number') out[k] = v - ((before as unknown as Record<string, number>)[k] ?? 0);
  return out as unknown as EmulatorStats;
}

export interface ServiceRunOptions {
  stack: BenchStack;
  emulator: EmulatorProcess;
  rows: number;
  /** Extra service environment (concurrency, delivery mode, timings). */
  env?: Record<string, string>;
  workers?: number;
  /** SIGKILL one worker once this share of rows is finished, and restart it at once. */
  killWorkerAt?: number;
  /** Node arguments for the worker processes (e.g. --cpu-prof). */
  workerNodeArgs?: string[];
  /** First a run of this many rows on the same Redis and processes, not measured: a service that has run before. */
  warmUpRows?: number;
  /** Sample Redis INFO memory during the run. */
  sampleRedis?: boolean;
  /** Redis with its AOF, fsynced this way (default: no AOF, the figures' long-standing set-up). */
  redisAppendfsync?: 'always' | 'everysec';
  audit?: boolean;
  /** Called with the service context once the run is finished, before anything stops. */
  inspect?: (pb: ReturnType<typeof createPortraitBatch>, runId: string) => Promise<void>;
  timeoutMs?: number;
  log?: (line: string) => void;
}

export interface ServiceRunResult {
  rows: number;
  completed: number;
  failed: number;
  seconds: number;
  cpuMs: Record<string, number>;
  /** When every row had its outcome, before the report was written (finalize reads every row's metadata back). */
  rowsDone?: { seconds: number; cpuMs: Record<string, number> };
  calls: EmulatorStats;
  redis?: { before: number; after: number; peak: number };
  audit?: AuditResult;
  kills: number;
}

async function redisUsedMemory(pb: ReturnType<typeof createPortraitBatch>): Promise<number> {
  return Number(/used_memory:(\d+)/.exec(await pb.context.redis.info('memory'))?.[1] ?? 0);
}

async function waitForLog(file: string, text: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await readFile(file, 'utf8').catch(() => '')).includes(text)) return;
    await sleep(100);
  }
  throw new Error(`${file} did not say "${text}" within ${timeoutMs} ms`);
}

export async function runService(o: ServiceRunOptions): Promise<ServiceRunResult> {
  const runId = `bench-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
  const redis = await startRunRedis(o.stack, runId, o.redisAppendfsync !== undefined, o.redisAppendfsync);
  const env = await serviceEnv(o.stack, redis.url, o.emulator, o.env);
  const pb = createPortraitBatch(loadConfig(env), { name: 'bench' });
  const roles: RoleProcess[] = [];
  let kills = 0;
  try {
    await pb.context.storage.ensureBucket();
    const face = await uploadFace(o.emulator, await facePng());
    const manifest = await writeManifest(o.stack.dir, runId, o.rows, face);
    let seq = 0;
    const startWorker = async () => {
      const log = `worker-${++seq}`;
      const w = spawnRole(o.stack, 'worker', env, o.workerNodeArgs ?? [], log);
      roles.push(w);
      await waitForLog(join(o.stack.dir, `${log}.log`), 'workers running');
      return w;
    };
    const hook = spawnRole(o.stack, 'webhook', env, [], 'webhook');
    roles.push(hook);
    await waitHealthy(env.WEBHOOK_PORT!);
    await Promise.all(Array.from({ length: o.workers ?? 1 }, startWorker));
    if (o.warmUpRows) {
      const warmUp = await pb.startRun(await writeManifest(o.stack.dir, `${runId}-warm-up`, o.warmUpRows, face), { runId: `${runId}-warm-up` });
      await waitForRun(pb.context, warmUp.runId, { intervalMs: 100, timeoutMs: 10 * 60_000 });
      o.log?.(`  service warm-up run ${warmUp.runId}: ${o.warmUpRows} rows, not measured`);
    }
    await sleep(500); // let start-up work (module loading, JIT) settle before the meter starts

    const cpu = new CpuMeter(() => ({ webhook: hook.pid, emulator: o.emulator.pid, s3: o.stack.s3.pid, redis: redis.process.pid }));
    const workerMeters = roles.filter((r) => r.role === 'worker').map((w) => new CpuMeter(() => ({ worker: w.pid })));
    const before = await o.emulator.stats();
    const redisBefore = o.sampleRedis ? await redisUsedMemory(pb) : 0;
    let redisPeak = redisBefore;
    const sampler = o.sampleRedis
      ? setInterval(() => void redisUsedMemory(pb).then((m) => (redisPeak = Math.max(redisPeak, m)), () => undefined), 200)
      : undefined;
    const t0 = Date.now();
    await pb.startRun(manifest, { runId });
    o.log?.(`  service run ${runId}: ${o.rows} rows, ${o.workers ?? 1} worker process(es), Redis ${redis.url}`);
    let killed = false;
    let rowsDone: ServiceRunResult['rowsDone'];
    const readCpu = () => {
      const c = cpu.read();
      c.worker = workerMeters.reduce((a, m) => a + (m.read().worker ?? 0), 0);
      return c;
    };
    const run = await waitForRun(pb.context, runId, {
      intervalMs: 100,
      timeoutMs: o.timeoutMs ?? 60 * 60_000,
      onProgress: async (r) => {
        const done = (r.completed + r.failed + r.canceled + r.rejected) / o.rows;
        if (done >= 1 && !rowsDone) rowsDone = { seconds: (Date.now() - t0) / 1000, cpuMs: readCpu() };
        if (o.killWorkerAt !== undefined && !killed && done >= o.killWorkerAt) {
          killed = true;
          const victim = roles.find((x) => x.role === 'worker')!;
          await victim.kill();
          roles.splice(roles.indexOf(victim), 1);
          kills++;
          o.log?.(`  SIGKILL worker at ${Math.round(done * 100)}% of rows finished; restarted`);
          await startWorker();
        }
      },
    });
    const seconds = ((run.finishedAt ?? Date.now()) - t0) / 1000;
    if (sampler) clearInterval(sampler);
    const redisAfter = o.sampleRedis ? await redisUsedMemory(pb) : 0;
    const cpuMs = readCpu();
    const calls = statsDelta(await o.emulator.stats(), before);
    const audit = o.audit ? await auditRun(pb.context, runId, { acceptedByRow: calls.acceptedByRow }) : undefined;
    await o.inspect?.(pb, runId);
    return {
      rows: o.rows,
      completed: run.completed,
      failed: run.failed,
      seconds,
      cpuMs,
      rowsDone,
      calls,
      redis: o.sampleRedis ? { before: redisBefore, after: redisAfter, peak: Math.max(redisPeak, redisAfter) } : undefined,
      audit,
      kills,
    };
  } finally {
    await Promise.all(roles.map((r) => r.stop()));
    await pb.close();
    await redis.stop();
  }
}

export interface BaselineRunResult {
  rows: number;
  completed: number;
  seconds: number;
  calls: EmulatorStats;
  kills: number;
}

/** The baseline script in its own process (twice when killed mid-run: the user reruns it). */
export async function runBaseline(o: { stack: BenchStack; emulator: EmulatorProcess; rows: number; concurrency: number; killAt?: number; log?: (line: string) => void }): Promise<BaselineRunResult> {
  // The baseline keeps nothing in Redis: only its bucket is ours to look at.
  const env = await serviceEnv(o.stack, 'redis://127.0.0.1:1', o.emulator);
  const storage = new Storage(loadConfig(env));
  try {
    await storage.ensureBucket();
    const face = await uploadFace(o.emulator, await facePng());
    const manifest = await writeManifest(o.stack.dir, `baseline-${Date.now().toString(36)}`, o.rows, face);
    const before = await o.emulator.stats();
    const t0 = Date.now();
    let kills = 0;
    let startedAt: number | undefined;
    let finishedAt: number | undefined;
    const once = (killAt?: number) =>
      new Promise<void>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', BASELINE, manifest], {
          env: { ...process.env, ...env, CONCURRENCY: String(o.concurrency) },
          stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
        });
        child.on('message', (m: { done: number; failed: number; startedAt?: number; finishedAt?: number }) => {
          if (m.startedAt) startedAt ??= m.startedAt;
          if (m.finishedAt) finishedAt = m.finishedAt;
          if (killAt !== undefined && m.done + m.failed >= killAt * o.rows && child.exitCode === null) {
            kills++;
            o.log?.(`  SIGKILL baseline at ${m.done + m.failed} rows finished; rerun`);
            child.kill('SIGKILL');
          }
        });
        child.once('exit', (code, signal) => (code === 0 || signal === 'SIGKILL' ? resolve() : reject(new Error(`baseline exited with ${code ?? signal}`))));
      });
    await once(o.killAt);
    if (kills) await once();
    // Clean runs: from the script's first row to its last (its start-up, like the service's, not counted).
    const seconds = ((kills ? Date.now() : (finishedAt ?? Date.now())) - (kills ? t0 : (startedAt ?? t0))) / 1000;
    let completed = 0;
    for await (const obj of storage.list('baseline/')) if (obj.key.endsWith('/0.png')) completed++;
    return { rows: o.rows, completed, seconds, calls: statsDelta(await o.emulator.stats(), before), kills };
  } finally {
    storage.client.destroy();
  }
}
