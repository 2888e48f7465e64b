// FAL_CONCURRENCY: how many rows may have a request on fal's side (submitted, not finished) at once,
// across every worker. fal never refuses for concurrency: it queues, and a request parked there for
// hours may pass its deadline, and canceling a started one still bills it. So rows wait here instead.
// A row takes its place before it is submitted and gives it back when its request is done (result
// recorded, failed, superseded, canceled or refused); the reconciler returns places whose row moved on
// without giving them back (a worker killed in between).
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { keys, type RowState } from './keys.ts';

const ACQUIRE = readFileSync(new URL('./commands/acquireFalSlot.lua', import.meta.url), 'utf8');

type Acquire = (key: string, member: string, limit: number, now: number) => Promise<'held' | 'acquired' | 'full'>;

const member = (runId: string, key: string) => `${runId}\n${key}`;

export class FalSlots {
  private readonly acquireScript: Acquire;

  constructor(
    private readonly redis: Redis,
    readonly limit: number,
  ) {
    const r = redis as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>;
    if (!r.pb_acquireFalSlot) redis.defineCommand('pb_acquireFalSlot', { numberOfKeys: 1, lua: ACQUIRE });
    this.acquireScript = async (...a) => {
      const reply = await r.pb_acquireFalSlot!.call(redis, ...a);
      if (reply !== 'held' && reply !== 'acquired' && reply !== 'full') throw new Error(`acquireFalSlot answered ${JSON.stringify(reply)}`);
      return reply;
    };
  }

  acquire(runId: string, key: string, now = Date.now()): Promise<'held' | 'acquired' | 'full'> {
    return this.acquireScript(keys.falSlots(), member(runId, key), this.limit, now);
  }

  async release(runId: string, key: string): Promise<void> {
    await this.redis.zrem(keys.falSlots(), member(runId, key));
  }

  async inUse(): Promise<number> {
    return this.redis.zcard(keys.falSlots());
  }

  /**
   * Gives back places held longer than `olderThanMs` by rows that no longer wait on fal (their state,
   * read by `stateOf`, is not submitting or submitted). Returns how many were freed.
   */
  async reclaim(stateOf: (runId: string, key: string) => Promise<RowState | undefined>, olderThanMs: number, now = Date.now()): Promise<number> {
    const held = await this.redis.zrangebyscore(keys.falSlots(), '-inf', now - olderThanMs);
    let freed = 0;
    for (const m of held) {
      const [runId, key] = m.split('\n');
      const state = runId && key ? await stateOf(runId, key) : undefined;
      if (state === 'submitting' || state === 'submitted') continue;
      freed += await this.redis.zrem(keys.falSlots(), m);
    }
    return freed;
  }
}

/** The deployment's places on fal (the object is cheap: the script is defined once per connection). */
export function falSlots(ctx: { redis: Redis; cfg: { FAL_CONCURRENCY: number } }): FalSlots {
  return new FalSlots(ctx.redis, ctx.cfg.FAL_CONCURRENCY);
}
