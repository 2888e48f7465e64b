// What every process role shares: validated config, one Redis connection, the row store, S3, the
// fal client and the queues. Built once per process.
import { Redis } from 'ioredis';
import type { Config } from './config.ts';
import { createFal, type FalClient } from './fal.ts';
import { createLogger, logDestination, type Logger } from './logger.ts';
import { createMetrics, type Metrics } from '../ops/metrics.ts';
import { buildPolicy, type Policy, type PolicyOverrides } from './policy.ts';
import { createQueues, type Queues } from './queues.ts';
import { watchRedis } from './reachability.ts';
import { RowStore } from './rowState.ts';
import { Storage } from './s3.ts';

export interface Context {
  cfg: Config;
  /** Retry and timing policy, built from cfg (tests shorten it). */
  policy: Policy;
  redis: Redis;
  rows: RowStore;
  storage: Storage;
  fal: FalClient;
  queues: Queues;
  logger: Logger;
  /** This process's Prometheus metrics (served by the admin listener). */
  metrics: Metrics;
  close(): Promise<void>;
}

export function redisConnection(url: string): Redis {
  // BullMQ workers block on Redis; they need unlimited retries per request.
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true });
}

export function createContext(cfg: Config, name = 'portrait-batch', policy?: PolicyOverrides): Context {
  const redis = redisConnection(cfg.REDIS_URL);
  const logger = createLogger(name, cfg.LOG_LEVEL, logDestination(cfg.LOG_FORMAT));
  watchRedis(redis, cfg.REDIS_URL, logger);
  const queues = createQueues(redis);
  // The queues share `redis`, whose outages watchRedis logs once; without a listener BullMQ prints
  // every reconnect error with its stack to stderr.
  for (const q of [queues.submit, queues.results, queues.control]) q.on('error', () => undefined);
  const metrics = createMetrics(cfg.CURRENCY);
  metrics.watchQueues(queues);
  return {
    cfg,
    policy: buildPolicy(cfg, policy),
    redis,
    rows: new RowStore(redis),
    storage: new Storage(cfg),
    fal: createFal(cfg),
    queues,
    logger,
    metrics,
    async close() {
      // Never wait on a Redis that is not there: quit() and the queues' close would queue forever.
      const up = redis.status === 'ready';
      if (!up) redis.disconnect();
      await queues.close();
      if (up) await redis.quit().catch(() => redis.disconnect());
    },
  };
}

/** The same context whose logger names what a piece of work is about (run id, row key, request id). */
export function withLogBindings(ctx: Context, bindings: Record<string, string | number | undefined>): Context {
  const defined = Object.fromEntries(Object.entries(bindings).filter(([, v]) => v !== undefined));
  return { ...ctx, logger: ctx.logger.child(defined) };
}
