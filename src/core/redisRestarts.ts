// A Redis that comes back may have lost its last acknowledged writes: AOF with `appendfsync everysec`
// after a host crash (up to about a second), a replica promoted before it caught up. A claim lost that
// way would make the restored submit job claim and pay the same attempt again. Each process notices a
// restart (the server's run_id differs after a reconnect) and then, before any submission goes on:
//  - writes back what it did itself in the moments before Redis went away — the claims it made and the
//    request ids fal gave it (workers), the result jobs it recorded (webhook receivers) — so Redis
//    knows again what fal has (a short redo log, kept in memory for `rememberMs`);
//  - holds its submissions for `holdMs`, so every process has written its own back (and the webhooks
//    of requests in flight have named their rows) before a row that may be on fal is claimed again;
//  - marks the runs in progress, so their finalize checks the report parts written around the restart
//    against the rows' metadata.
// While Redis is away nothing is submitted either: whether it lost anything is known only once it is back.
// With `appendfsync always` (the embedded stack, compose) an acknowledged write is on disk, so a restart
// loses nothing and this only costs the hold; see the README's "Never lose, never pay twice".
import type { Redis } from 'ioredis';
import type { Context } from './context.ts';
import { errorMessage } from './errors.ts';
import { keys } from './keys.ts';
import type { RowData } from './rowState.ts';

/** A claim this process made, and the request fal answered for it. */
interface Claim {
  runId: string;
  key: string;
  line: number;
  ordinal?: number;
  data: RowData;
  costMicros?: number;
  attempt: number;
  requestId?: string;
  at: number;
}

type Hook = () => Promise<void>;

export interface RedisRestarts {
  /** True while Redis is away or just came back from a restart: no submission now. */
  holding(): boolean;
  /** Resolves when submissions may go on (at once unless holding). */
  whenClear(): Promise<void>;
  /** When the current hold ends, if it is a timed one (ms since epoch). */
  holdEndsAt(): number | undefined;
  /** A claim was made (the attempt is recorded): remembered until `rememberMs` after Redis was last seen. */
  claimed(c: Omit<Claim, 'at'>): void;
  /** fal accepted the claim's attempt with this request id. */
  submitted(runId: string, key: string, attempt: number, requestId: string): void;
  /** The claim was taken back (fal refused) or its row moved on: nothing to write back. */
  released(runId: string, key: string, attempt: number): void;
  /** Something more to write back after a restart (the receiver's recent result jobs). */
  onRestart(hook: Hook): void;
  /** Restarts seen by this process. */
  restarts(): number;
}

const registry = new WeakMap<Redis, RedisRestarts>();

/** The restart watch of this process's Redis connection (one per connection, made on first use). */
export function redisRestarts(ctx: Pick<Context, 'redis' | 'rows' | 'policy' | 'logger' | 'cfg'>): RedisRestarts {
  let watch = registry.get(ctx.redis);
  if (!watch) registry.set(ctx.redis, (watch = watchRestarts(ctx)));
  return watch;
}

function watchRestarts(ctx: Pick<Context, 'redis' | 'rows' | 'policy' | 'logger' | 'cfg'>): RedisRestarts {
  const { redis, logger } = ctx;
  const { holdMs, rememberMs } = ctx.policy.redisRestart;
  const claims = new Map<string, Claim>();
  const hooks: Hook[] = [];
  let runId: string | undefined;
  let away = redis.status !== 'ready';
  let lastSeenUp = Date.now();
  let holdUntil = 0;
  let count = 0;
  let waiters: (() => void)[] = [];
  let timer: NodeJS.Timeout | undefined;

  const holding = () => away || Date.now() < holdUntil;
  const wake = () => {
    if (holding()) return;
    const w = waiters;
    waiters = [];
    for (const f of w) f();
  };
  const prune = () => {
    const oldest = lastSeenUp - rememberMs;
    for (const [k, c] of claims) {
      if (c.at >= oldest) break; // insertion order is time order (entries are re-inserted when touched)
      claims.delete(k);
    }
  };

  const serverRunId = async () => /^run_id:(\S+)/m.exec(await redis.info('server'))?.[1];
  const learn = () =>
    serverRunId().then(
      (id) => (runId = id),
      () => undefined,
    );
  if (!away) void learn();

  redis.on('close', () => {
    if (away) return;
    away = true;
    lastSeenUp = Date.now();
  });
  redis.on('ready', () => {
    void (async () => {
      let id: string | undefined;
      try {
        id = await serverRunId();
      } catch (err) {
        logger.warn({ err: errorMessage(err) }, 'could not read Redis run_id after a reconnect; treating it as a restart');
      }
      const restarted = runId !== undefined && id !== runId;
      if (id) runId = id;
      if (restarted) {
        count++;
        holdUntil = Date.now() + holdMs;
        clearTimeout(timer);
        timer = setTimeout(wake, holdMs + 5);
        timer.unref();
      }
      away = false;
      if (restarted) await writeBack();
      lastSeenUp = Date.now();
      wake();
    })();
  });

  /** After a restart: what this process did just before, written back; every run in progress marked. */
  async function writeBack(): Promise<void> {
    const since = lastSeenUp - rememberMs;
    const mine = [...claims.values()].filter((c) => c.at >= since);
    let adopted = 0;
    const now = Date.now();
    const nextPollAt = ctx.cfg.delivery.mode === 'poll' ? now : now + ctx.policy.reconcile.graceMs;
    for (const c of mine) {
      try {
        const claimed = { line: c.line, ordinal: c.ordinal, data: c.data, costMicros: c.costMicros };
        const reply = c.requestId
          ? await ctx.rows.recordSubmit(c.runId, c.key, c.attempt, c.requestId, nextPollAt, claimed)
          : (await ctx.rows.reclaimSubmit(c.runId, c.key, c.attempt, claimed))
            ? 'adopted'
            : 'noop';
        if (reply === 'adopted') adopted++;
      } catch (err) {
        logger.warn({ runId: c.runId, row: c.key, err: errorMessage(err) }, 'could not write a claim back after the Redis restart');
      }
    }
    for (const hook of hooks) await hook().catch((err: unknown) => logger.warn({ err: errorMessage(err) }, 'writing back after the Redis restart failed'));
    try {
      for (const id of await ctx.rows.activeRunIds()) await redis.hsetnx(keys.run(id), `restartedAt:${runId}`, String(now));
    } catch (err) {
      logger.warn({ err: errorMessage(err) }, 'could not mark the runs in progress after the Redis restart');
    }
    logger.warn(
      { claimsRemembered: mine.length, claimsWrittenBack: adopted, holdMs },
      `Redis restarted (new run_id): it may have lost its last writes; ${adopted} of this process's ${mine.length} recent claims were written back, submissions wait ${Math.round(holdMs / 1000)} s`,
    );
  }

  const id = (runId: string, key: string) => `${runId}\n${key}`;
  return {
    holding,
    whenClear: () => (holding() ? new Promise<void>((resolve) => waiters.push(resolve)) : Promise.resolve()),
    holdEndsAt: () => (Date.now() < holdUntil ? holdUntil : undefined),
    claimed(c) {
      const k = id(c.runId, c.key);
      claims.delete(k);
      claims.set(k, { ...c, at: Date.now() });
      if (!away) {
        lastSeenUp = Date.now();
        prune();
      }
    },
    submitted(runId, key, attempt, requestId) {
      const c = claims.get(id(runId, key));
      if (c && c.attempt === attempt) c.requestId = requestId;
    },
    released(runId, key, attempt) {
      const k = id(runId, key);
      if (claims.get(k)?.attempt === attempt) claims.delete(k);
    },
    onRestart: (hook) => void hooks.push(hook),
    restarts: () => count,
  };
}
