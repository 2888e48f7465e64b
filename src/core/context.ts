// What every process role shares: validated config, one Redis connection, the row store, S3, the
// fal client and the queues. Built once per process.
import { Redis } from 'ioredis';
import type { Config } from './config.ts';
import { createFal, type FalClient } from './fal.ts';
import { createLogger, type Logger } from './logger.ts';
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
  close(): Promise<void>;
}

export function redisConnection(url: string): Redis {
  // BullMQ workers block on Redis; they need unlimited retries per request.
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true });
}

export function createContext(cfg: Config, name = 'portrait-batch', policy?: PolicyOverrides): Context {
  const redis = redisConnection(cfg.REDIS_URL);
  const logger = createLogger(name, cfg.LOG_LEVEL);
  watchRedis(redis, cfg.REDIS_URL, logger);
  const queues = createQueues(redis);
  // The queues share `redis`, whose outages watchRedis logs once; without a listener BullMQ prints
  // every reconnect error with its stack to stderr.
  for (const q of [queues.submit, queues.results, queues.control]) q.on('error', () => undefined);
  return {
    cfg,
    policy: buildPolicy(cfg, policy),
    redis,
    rows: new RowStore(redis),
    storage: new Storage(cfg),
    fal: createFal(cfg),
    queues,
    logger,
    async close() {
      // Never wait on a Redis that is not there: quit() and the queues' close would queue forever.
      if (redis.status !== 'ready') redis.disconnect();
      await queues.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}

