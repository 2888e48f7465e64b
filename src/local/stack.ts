// The embedded default: everything `demo`, `chaos` and the tests need on one machine, each part
// started only when the environment does not name a real one (REDIS_URL, S3_ENDPOINT, FAL_QUEUE_URL).
// One stack per data dir (a pid file), on the same ports every time (stack.json), so a rerun after
// an interrupt finds its Redis data, its results and its webhooks where they were.
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { CONFIG_VARS, loadConfig, type Config } from '../core/config.ts';
import { startEmulator, type EmulatorOptions, type RunningEmulator } from '../emulator/index.ts';
import { lockDataDir } from './dataDirLock.ts';
import { startRedisServer, stopLeftoverRedis, type RunningRedis } from './redisServer.ts';
import { S3RVER_CREDENTIALS, startS3Server, type RunningS3 } from './s3Server.ts';
import { dashboardTokenFor, webhookSecretFor } from './secret.ts';
import { StackPorts } from './stackState.ts';

export interface LocalStackOptions {
  dataDir: string;
  /** Explicit configuration; it wins over every embedded default. */
  env?: NodeJS.ProcessEnv;
  /** Defaults for the embedded stack (e.g. shorter reconcile intervals), below explicit env. */
  defaults?: Record<string, string>;
  emulator?: EmulatorOptions;
  persistentRedis?: boolean;
}

export interface LocalStack {
  /** The full environment for this stack: give it to child processes. */
  env: Record<string, string>;
  cfg: Config;
  redis?: RunningRedis;
  s3?: RunningS3;
  emulator?: RunningEmulator;
  stop(): Promise<void>;
}

export async function startLocalStack(opts: LocalStackOptions): Promise<LocalStack> {
  const explicit = Object.fromEntries(Object.entries(opts.env ?? process.env).filter(([, v]) => v !== undefined && v !== '')) as Record<string, string>;
  const env: Record<string, string> = { ...opts.defaults };
  const persistent = opts.persistentRedis ?? true;
  await mkdir(opts.dataDir, { recursive: true });
  const lock = await lockDataDir(opts.dataDir);
  const started: { stop(): Promise<void> }[] = [{ stop: () => lock.release() }];
  const stack: Partial<LocalStack> = {};
  try {
    const ports = await StackPorts.load(opts.dataDir);
    if (!explicit.REDIS_URL) {
      const dir = join(opts.dataDir, 'redis');
      await stopLeftoverRedis(dir); // a killed holder's Redis would hold the kept port and the AOF
      stack.redis = await startRedisServer({ dir, persistent, port: await ports.take('redis') });
      started.push(stack.redis);
      env.REDIS_URL = stack.redis.url;
    }
    if (!explicit.S3_ENDPOINT) {
      const bucket = explicit.S3_BUCKET ?? env.S3_BUCKET ?? CONFIG_VARS.S3_BUCKET.default;
      stack.s3 = await startS3Server({ dir: join(opts.dataDir, 's3'), port: await ports.take('s3'), buckets: [bucket] });
      started.push({ stop: () => stack.s3!.close() });
      Object.assign(env, S3RVER_CREDENTIALS, { S3_ENDPOINT: stack.s3.endpoint, S3_FORCE_PATH_STYLE: 'true' });
      // The AWS SDK in this process reads its credentials from process.env.
      for (const [k, v] of Object.entries(S3RVER_CREDENTIALS)) process.env[k] ??= v;
    }
    if (!explicit.FAL_QUEUE_URL) {
      // A persistent stack keeps the emulator's books (requests, results) in the data dir too: fal
      // would still have them after our interrupt.
      const stateDir = persistent ? join(opts.dataDir, 'emulator') : undefined;
      stack.emulator = await startEmulator({ stateDir, ...opts.emulator, port: opts.emulator?.port ?? (await ports.take('emulator')) });
      started.push({ stop: () => stack.emulator!.close() });
      const host = new URL(stack.emulator.url).host;
      Object.assign(env, { FAL_QUEUE_URL: stack.emulator.url, FAL_JWKS_URL: stack.emulator.jwksUrl, FAL_KEY: 'emulator-key', RESULT_HOSTS: host });
      // As many requests on fal's side as the emulator has slots (its default is fal's starting 2).
      env.FAL_CONCURRENCY ??= String(Math.max(1, opts.emulator?.slots ?? 2));
    }
    if (!explicit.WEBHOOK_PORT) env.WEBHOOK_PORT = String(await ports.take('webhook'));
    await ports.save();
    if (!explicit.WEBHOOK_SECRET) env.WEBHOOK_SECRET = await webhookSecretFor(opts.dataDir);
    // Each process of the stack opens its own admin listener: any free port (logged), unless one is named.
    if (!explicit.ADMIN_PORT) env.ADMIN_PORT = '0';
    if (!explicit.DASHBOARD_TOKEN) env.DASHBOARD_TOKEN = await dashboardTokenFor(opts.dataDir);
    Object.assign(env, explicit);
    stack.env = env;
    stack.cfg = loadConfig(env);
  } catch (err) {
    for (const s of started.reverse()) await s.stop().catch(() => undefined);
    throw err;
  }
  return {
    ...(stack as LocalStack),
    async stop() {
      for (const s of started.reverse()) await s.stop().catch(() => undefined);
    },
  };
}
