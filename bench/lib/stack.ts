// The benchmark stack: redis-server, s3rver and fal emulators each in a process of their own
// (bench/servers.ts), and the service's roles (`portrait-batch webhook`, `portrait-batch worker`)
// spawned as separate processes with the environment a user would give them.
import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import type { EmulatorOptions, EmulatorStats } from '../../src/emulator/index.ts';
import { freePort } from '../../src/local/ports.ts';
import { startRedisServer, type RunningRedis } from '../../src/local/redisServer.ts';
import { S3RVER_CREDENTIALS } from '../../src/local/s3Server.ts';

const SERVERS = fileURLToPath(new URL('../servers.ts', import.meta.url));
export const CLI = fileURLToPath(new URL('../../bin/portrait-batch.js', import.meta.url));

export interface ServerProcess {
  url: string;
  pid: number;
  child: ChildProcess;
  stop(): Promise<void>;
}

export interface EmulatorProcess extends ServerProcess {
  jwksUrl: string;
  stats(): Promise<EmulatorStats>;
  /** GET /_emulator/requests/{id}: a request's timestamps. */
  request(id: string): Promise<{ createdAt: number; startedAt: number | null; completedAt: number | null }>;
}

function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill(signal);
  });
}

async function spawnServer(kind: 'emulator' | 's3', options: object): Promise<ServerProcess & { info: Record<string, unknown> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', SERVERS, kind], {
    env: { ...process.env, BENCH_SERVER_OPTIONS: JSON.stringify(options) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const info = await new Promise<Record<string, unknown>>((resolve, reject) => {
    child.once('message', (m) => resolve(m as Record<string, unknown>));
    child.once('exit', (code) => reject(new Error(`bench ${kind} server exited with ${code} before it was ready`)));
  });
  return { url: String(info.url), pid: child.pid!, child, info, stop: () => stopChild(child) };
}

/** An ED25519 key the emulator signs webhooks with; the bench signs its own with it too (figure 4). */
export function newSigningKeyPem(): string {
  return generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

export async function startEmulatorProcess(opts: EmulatorOptions & { signingKeyPem?: string }): Promise<EmulatorProcess> {
  // Small images and a fixed seed unless told otherwise: the emulator's own cost stays low and runs repeat.
  const s = await spawnServer('emulator', { sizeScale: 0.0625, seed: 11, ...opts, logger: undefined, signingKey: undefined });
  const get = async <T>(path: string): Promise<T> => {
    const res = await fetch(`${s.url}${path}`);
    if (!res.ok) throw new Error(`emulator ${path}: ${res.status}`);
    return (await res.json()) as T;
  };
  return { ...s, jwksUrl: String(s.info.jwksUrl), stats: () => get<EmulatorStats>('/_emulator/stats'), request: (id) => get(`/_emulator/requests/${id}`) };
}

/** What runs share: a directory and one s3rver (each run has its own bucket, Redis and emulator). */
export interface BenchStack {
  dir: string;
  s3: ServerProcess;
  stop(): Promise<void>;
}

export async function startBenchStack(dir: string): Promise<BenchStack> {
  await mkdir(dir, { recursive: true });
  for (const [k, v] of Object.entries(S3RVER_CREDENTIALS)) process.env[k] ??= v;
  const s3 = await spawnServer('s3', { dir: join(dir, 's3') });
  return { dir, s3, stop: () => s3.stop() };
}

/** A fresh redis-server of a run's own; `persistent`: with its AOF, fsynced as `appendfsync` says (default always, as compose runs it). */
export function startRunRedis(stack: BenchStack, name: string, persistent = false, appendfsync?: 'always' | 'everysec'): Promise<RunningRedis> {
  return startRedisServer({ dir: join(stack.dir, `redis-${name}`), persistent, appendfsync });
}

/** The environment every service process of a benchmark run gets. */
export async function serviceEnv(stack: BenchStack, redisUrl: string, emulator: EmulatorProcess, extra: Record<string, string> = {}): Promise<Record<string, string>> {
  return {
    ...S3RVER_CREDENTIALS,
    REDIS_URL: redisUrl,
    S3_ENDPOINT: stack.s3.url,
    S3_FORCE_PATH_STYLE: 'true',
    S3_BUCKET: `bench-${randomBytes(4).toString('hex')}`,
    FAL_QUEUE_URL: emulator.url,
    FAL_JWKS_URL: emulator.jwksUrl,
    FAL_KEY: 'bench-key',
    RESULT_HOSTS: new URL(emulator.url).host,
    WEBHOOK_PORT: String(await freePort()),
    WEBHOOK_SECRET: randomBytes(32).toString('hex'),
    LOG_LEVEL: 'warn',
    // Every process opens an admin listener: any free port, so several roles and runs fit on one host.
    ADMIN_PORT: '0',
    ...extra,
  };
}

export interface RoleProcess {
  role: 'webhook' | 'worker';
  pid: number;
  child: ChildProcess;
  stop(): Promise<void>;
  kill(): Promise<void>;
}

/** `portrait-batch <role>` in its own process; its logs go to a file in the stack's directory. */
export function spawnRole(stack: BenchStack, role: 'webhook' | 'worker', env: Record<string, string>, nodeArgs: string[] = [], logName: string = role): RoleProcess {
  const logFd = openSync(join(stack.dir, `${logName}.log`), 'a');
  const child = spawn(process.execPath, [...nodeArgs, CLI, role], { env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env }, stdio: ['ignore', logFd, logFd] });
  closeSync(logFd);
  return { role, pid: child.pid!, child, stop: () => stopChild(child), kill: () => stopChild(child, 'SIGKILL') };
}

/** Waits until the webhook receiver answers /healthz. */
export async function waitHealthy(port: string | number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false)) return;
    await sleep(100);
  }
  throw new Error(`webhook receiver on :${port} did not come up within ${timeoutMs} ms`);
}

/** fal's file bytes (face): uploaded once through the emulator's fal storage, as fal.storage.upload does. */
export async function uploadFace(emulator: EmulatorProcess, png: Buffer): Promise<string> {
  const init = await fetch(`${emulator.url}/storage/upload/initiate`, {
    method: 'POST',
    headers: { authorization: 'Key bench-key', 'content-type': 'application/json' },
    body: JSON.stringify({ content_type: 'image/png', file_name: 'face.png' }),
  });
  const { upload_url, file_url } = (await init.json()) as { upload_url: string; file_url: string };
  const put = await fetch(upload_url, { method: 'PUT', headers: { 'content-type': 'image/png' }, body: png });
  if (!put.ok) throw new Error(`face upload: ${put.status}`);
  return file_url;
}
