// What every process role shares: validated config, one Redis connection, the row store, S3, the
// fal client and the queues. Built once per process; the clients only some commands use (S3, the fal
// client, the queues, the metrics) on first use, so a command that reads Redis loads Redis: `status`
// of a running run loads no AWS SDK, BullMQ, fal client or prom-client.
import { Redis } from 'ioredis';
import type { DestinationStream } from 'pino';
import type { Config } from './config.ts';
import { Dependencies, isRedisOutage } from './dependencies.ts';
import { createFal, type FalClient } from './fal.ts';
import { keys } from './keys.ts';
import { createLogger, logDestination, type Logger } from './logger.ts';
import type { Metrics } from './metrics.ts';
import { pauseQueuesDuringOutages } from './outagePauses.ts';
import { buildPolicy, type Policy, type PolicyOverrides } from './policy.ts';
import { createQueues, type Queues } from './queues.ts';
import { redisAddress, s3Address } from './reachability.ts';
import { watchRedisStalls } from './redisStalls.ts';
import { RowStore } from './rowState.ts';
import { Storage } from './s3.ts';

export interface Context {
  cfg: Config;
  /** Retry and timing policy, built from cfg (tests shorten it). */
  policy: Policy;
  redis: Redis;
  rows: RowStore;
  /** Built on first use, like fal, queues and metrics. */
  readonly storage: Storage;
  readonly fal: FalClient;
  readonly queues: Queues;
  logger: Logger;
  /** This process's Prometheus metrics (served by the admin listener); made on first use, watching the queues. */
  readonly metrics: Metrics;
  /** Redis, S3 and fal as this process sees them: outages said once, probed, queues paused meanwhile. */
  dependencies: Dependencies;
  close(): Promise<void>;
}

export function redisConnection(url: string, commandTimeoutMs?: number): Redis {
  // BullMQ workers block on Redis; they need unlimited retries per request. The command timeout makes
  // a stalled Redis an error instead of silence (see Policy.redisCommandTimeoutMs).
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, commandTimeout: commandTimeoutMs });
}

export interface ContextOptions {
  /** Where log lines go instead of stderr (tests count them). */
  log?: DestinationStream;
  /** Makes this process's metrics (ops/metrics.ts's createMetrics), called on their first use: the context watches its queues and dependencies with them. */
  metrics: () => Metrics;
}

export function createContext(cfg: Config, name: string, policyOverrides: PolicyOverrides | undefined, options: ContextOptions): Context {
  const policy = buildPolicy(cfg, policyOverrides);
  const redis = redisConnection(cfg.REDIS_URL, policy.redisCommandTimeoutMs);
  const logger = createLogger(name, cfg.LOG_LEVEL, options.log ?? logDestination(cfg.LOG_FORMAT));
  let storage: Storage | undefined;
  const storageOf = () => (storage ??= new Storage(cfg));
  const s3 = s3Address(cfg);
  const dependencies = new Dependencies({
    redis,
    logger,
    policy: policy.dependencies,
    processName: `${name}:${process.pid}`,
    where: { redis: `REDIS_URL ${redisAddress(cfg.REDIS_URL)}`, s3: `${s3.variable} ${s3.address}`, fal: `FAL_QUEUE_URL ${hostOf(cfg.FAL_QUEUE_URL)}` },
    probes: {
      async redis() {
        if (redis.status !== 'ready') throw new Error(`not connected (${redis.status})`);
        // A write: a Redis that answers PING but refuses writes (MISCONF, disk full) is still down.
        await redis.set(keys.redisProbe(), String(Date.now()), 'PX', 60_000);
      },
      s3: (signal) => storageOf().headBucket(signal),
      async fal(signal) {
        // Any HTTP answer below 500 from fal's queue host means it is there again.
        const res = await fetch(cfg.FAL_QUEUE_URL, { signal, redirect: 'manual' });
        await res.body?.cancel();
        if (res.status >= 500) throw new Error(`answered ${res.status}`);
      },
    },
  });
  // ioredis reconnects by itself; its connection errors only tell the tracker (said once, not per
  // retry). Until the first connection the start-up check speaks instead (waitForRedis).
  let connected = false;
  redis.on('ready', () => (connected = true));
  redis.on('error', (err: unknown) => {
    if (connected && isRedisOutage(err, true)) dependencies.down('redis', err);
  });
  const stopStallWatch = watchRedisStalls(redis, dependencies, policy.dependencies.redisStall);
  let queues: Queues | undefined;
  const queuesOf = () => {
    if (queues) return queues;
    queues = createQueues(redis);
    // The queues share `redis`, whose outages the tracker says once; without a listener BullMQ prints
    // every reconnect error with its stack to stderr.
    for (const q of [queues.submit, queues.results, queues.control, queues.produce, queues.poll]) q.on('error', () => undefined);
    return queues;
  };
  let metrics: Metrics | undefined;
  const metricsOf = () => {
    if (metrics) return metrics;
    metrics = options.metrics();
    metrics.watchQueues(queuesOf());
    metrics.watchDependencies(() => dependencies.outages());
    return metrics;
  };
  let fal: FalClient | undefined;
  const ctx: Context = {
    cfg,
    policy,
    redis,
    rows: new RowStore(redis),
    get storage() {
      return storageOf();
    },
    get fal() {
      return (fal ??= createFal(cfg));
    },
    get queues() {
      return queuesOf();
    },
    logger,
    get metrics() {
      return metricsOf();
    },
    dependencies,
    async close() {
      stopStallWatch();
      dependencies.close();
      // Never wait on a Redis that is not there: quit() and the queues' close would queue forever.
      const up = redis.status === 'ready';
      if (!up) redis.disconnect();
      await queues?.close();
      if (up) await redis.quit().catch(() => redis.disconnect());
    },
  };
  pauseQueuesDuringOutages(ctx);
  return ctx;
}

function hostOf(url: string): string {
  try {
    return new URL(url).host;
  } catch {
    return url;
  }
}

/** The same context whose logger names what a piece of work is about (run id, row key, request id). */
export function withLogBindings(ctx: Context, bindings: Record<string, string | number | undefined>): Context {
  const defined = Object.fromEntries(Object.entries(bindings).filter(([, v]) => v !== undefined));
  // Copied with its getters (a spread would call them): the clients stay the ones built on first use.
  const copy = Object.defineProperties({}, Object.getOwnPropertyDescriptors(ctx)) as Context;
  copy.logger = ctx.logger.child(defined);
  return copy;
}
