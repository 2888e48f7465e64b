// `portrait-batch chaos`: the local stack with every fault on — fal 429/5xx, submits accepted whose
// answer is lost, dropped, duplicated and delayed webhooks, model errors, lost requests, failing
// image downloads, failing S3 writes — the webhook receiver and the workers in their own processes,
// each SIGKILLed twice mid-run and restarted. Then the run is checked from S3 and Redis (auditRun),
// not from anyone's counters.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { auditRun, type AuditResult } from './audit.ts';
import { loadConfig } from './core/config.ts';
import type { EmulatorOptions } from './emulator/index.ts';
import { startFaultProxy } from './local/faultProxy.ts';
import { createPortraitBatch } from './index.ts';
import { startLocalStack } from './local/stack.ts';
import { waitForRun } from './producer/wait.ts';

export interface ChaosOptions {
  rows?: number;
  /** Kills of each of the worker and the webhook receiver. */
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

export async function runChaos(opts: ChaosOptions = {}): Promise<ChaosResult> {
  const rows = opts.rows ?? 2000;
  const killsPerRole = opts.killsPerRole ?? 2;
  const log = opts.log ?? (() => undefined);
  const started = Date.now();
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'pb-chaos-')));
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
      SUBMIT_MAX_TRIES: '12',
      STORE_MAX_TRIES: '10',
      MAX_ATTEMPTS: '5',
      RUN_WINDOW: '400',
      FAILURE_THRESHOLD_RATIO: '1',
      LOG_LEVEL: 'warn',
      S3_BUCKET: 'portrait-chaos',
    },
    emulator: { sizeScale: 0.0625, latencyMs: { min: 20, max: 200 }, slots: 32, seed: 7, faults: CHAOS_FAULTS },
  });
  const s3Proxy = await startFaultProxy({ target: stack.cfg.S3_ENDPOINT!, failureRate: CHAOS_S3_PUT_FAILURE_RATE });
  const env = { ...process.env, ...stack.env, S3_ENDPOINT: s3Proxy.url };
  const cfg = loadConfig(env);
  const pb = createPortraitBatch(cfg, { name: 'chaos' });
  const ctx = pb.context;
  const logFd = openSync(join(dataDir, 'chaos.log'), 'a');
  const children = new Map<string, ChildProcess>();
  const startRole = (role: 'webhook' | 'worker') => {
    const child = spawn(process.execPath, [CLI, role], { env, stdio: ['ignore', logFd, logFd] });
    children.set(role, child);
    return child;
  };
  const waitHealthy = async () => {
    for (let i = 0; i < 100; i++) {
      if (await fetch(`http://127.0.0.1:${cfg.WEBHOOK_PORT}/healthz`).then((r) => r.ok, () => false)) return;
      await sleep(100);
    }
    throw new Error('webhook receiver did not come up');
  };
  let kills = 0;
  try {
    await ctx.storage.ensureBucket();
    const manifest = await writeChaosManifest(join(dataDir, 'manifest'), rows);
    startRole('webhook');
    startRole('worker');
    await waitHealthy();

    // The run is produced by the worker process too, so the kills land on the producer as well.
    const runId = `chaos-${rows}-${Date.now().toString(36)}`;
    await pb.startRun(manifest, { runId });
    log(`chaos run ${runId}: ${rows} rows`);
    // Kill points spread over the run, alternating roles: SIGKILL, then restart at once.
    const plan = Array.from({ length: killsPerRole * 2 }, (_, i) => ({ role: i % 2 === 0 ? 'worker' : 'webhook', at: (i + 1) / (killsPerRole * 2 + 1) })) as {
      role: 'worker' | 'webhook';
      at: number;
    }[];
    await waitForRun(ctx, runId, {
      timeoutMs: opts.timeoutMs ?? 30 * 60_000,
      intervalMs: 250,
      onProgress: (r) => {
        const done = (r.completed + r.failed + r.canceled + r.rejected) / rows;
        while (plan.length && done >= plan[0]!.at) {
          const { role } = plan.shift()!;
          children.get(role)?.kill('SIGKILL');
          kills++;
          log(`  SIGKILL ${role} at ${Math.round(done * 100)}% (${r.completed} completed, ${r.failed} failed)`);
          startRole(role);
        }
      },
    });
    const audit = await auditRun(ctx, runId, { acceptedByRow: stack.emulator!.stats().acceptedByRow, verifyHashes: true }).catch((err: Error) =>
      Promise.reject(new Error(`audit failed: ${err.name}: ${err.message}`)),
    );
    return {
      rows,
      completed: audit.completed,
      failed: audit.failed,
      lost: audit.lost,
      duplicated: audit.duplicated,
      extraSubmits: audit.extraSubmits,
      ambiguousSubmits: audit.ambiguousSubmits,
      kills,
      seconds: Math.round((Date.now() - started) / 100) / 10,
      audit,
    };
  } finally {
    for (const c of children.values()) c.kill('SIGTERM');
    await Promise.all([...children.values()].map((c) => (c.exitCode === null ? new Promise((r) => c.once('exit', r)) : undefined)));
    closeSync(logFd);
    await pb.close();
    await s3Proxy.close();
    await stack.stop();
    if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
  }
}

/** N rows over 8 local faces, with a mix of sizes, formats and image counts. */
async function writeChaosManifest(dir: string, rows: number): Promise<string> {
  await mkdir(join(dir, 'faces'), { recursive: true });
  for (let i = 0; i < 8; i++) {
    const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="hsl(${i * 45},40%,80%)"/><circle cx="32" cy="34" r="22" fill="hsl(${i * 45 + 20},50%,65%)"/></svg>`;
    await sharp(Buffer.from(svg)).png().toFile(join(dir, 'faces', `f${i}.png`));
  }
  const lines = ['id,face_url,num_images,output_format,image_size'];
  for (let i = 0; i < rows; i++) lines.push(`c${i},faces/f${i % 8}.png,${(i % 2) + 1},${['png', 'jpeg', 'webp'][i % 3]},${i % 4 === 0 ? 'portrait_4_3' : ''}`);
  const file = join(dir, 'chaos.csv');
  await writeFile(file, `${lines.join('\n')}\n`);
  return file;
}
