// Submissions pause when fal refuses our API key: hammering fal with a bad key helps nobody. The
// pause is global (one key serves every run), recorded with its reason, and lifted by `resume` or by
// a worker that starts with a different key.
import { createHash } from 'node:crypto';
import type { Context } from './context.ts';
import { keys } from './keys.ts';

export interface PauseInfo {
  reason: string;
  at: number;
  keyFingerprint: string;
}

export function keyFingerprint(key: string | undefined): string {
  return key ? createHash('sha256').update(key).digest('hex').slice(0, 12) : 'none';
}

export async function getPause(ctx: Pick<Context, 'redis'>): Promise<PauseInfo | undefined> {
  const h = await ctx.redis.hgetall(keys.pause());
  if (!h.reason) return undefined;
  return { reason: h.reason, at: Number(h.at), keyFingerprint: h.keyFingerprint ?? '' };
}

export async function pauseSubmissions(ctx: Context, reason: string): Promise<void> {
  await ctx.redis.hset(keys.pause(), { reason, at: Date.now(), keyFingerprint: keyFingerprint(ctx.cfg.FAL_KEY) });
  await ctx.queues.submit.pause();
  ctx.logger.error({ reason }, 'submissions paused');
}

export async function resumeSubmissions(ctx: Context): Promise<boolean> {
  const was = await ctx.redis.del(keys.pause());
  await ctx.queues.submit.resume();
  return was === 1;
}

/** A worker started with a different key than the one fal refused lifts the pause itself. */
export async function resumeIfKeyChanged(ctx: Context): Promise<void> {
  const p = await getPause(ctx);
  if (p && p.keyFingerprint !== keyFingerprint(ctx.cfg.FAL_KEY)) {
    ctx.logger.info({ was: p.reason }, 'FAL_KEY changed since submissions were paused: resuming');
    await resumeSubmissions(ctx);
  }
}
