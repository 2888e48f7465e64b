// Health of a process for its admin listener: /healthz says the process is alive (and not shutting
// down); /readyz says it can work: Redis answers PING and the S3 bucket answers HeadBucket, each
// within a short timeout, and no dependency is in an outage (core/dependencies.ts: fal unreachable,
// or Redis/S3 failing the work though a quick check passes), and names what is down when not.
import type { Context } from '../core/context.ts';
import { errorMessage } from '../core/errors.ts';

/** How long each readiness check may take: a probe must answer well within its orchestrator's timeout. */
export const READY_TIMEOUT_MS = 1500;

export interface Readiness {
  ready: boolean;
  /** The checks that failed, e.g. ['redis']. */
  down: string[];
  checks: Record<'redis' | 's3' | 'fal', { ok: boolean; error?: string }>;
}

/** host:port of a Redis URL, never its password. */
function redisAddress(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || 6379}`;
  } catch {
    return 'REDIS_URL';
  }
}

async function check(name: string, what: string, run: (signal: AbortSignal) => Promise<unknown>, timeoutMs: number): Promise<{ ok: boolean; error?: string }> {
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<{ ok: boolean; error: string }>((resolve) => {
    timer = setTimeout(() => {
      abort.abort();
      resolve({ ok: false, error: `${name} (${what}) did not answer within ${timeoutMs} ms` });
    }, timeoutMs);
  });
  try {
    return await Promise.race([
      run(abort.signal).then(
        () => ({ ok: true }),
        (err: unknown) => ({ ok: false, error: `${name} (${what}): ${errorMessage(err)}` }),
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export async function readiness(ctx: Context, timeoutMs = READY_TIMEOUT_MS): Promise<Readiness> {
  const [redis, s3] = await Promise.all([
    check('redis', redisAddress(ctx.cfg.REDIS_URL), async () => {
      // An offline client would queue the PING until Redis is back: answer "down" at once instead.
      if (['reconnecting', 'close', 'end'].includes(ctx.redis.status)) throw new Error(`not connected (${ctx.redis.status})`);
      const pong = await ctx.redis.ping();
      if (pong !== 'PONG') throw new Error(`answered ${pong}`);
    }, timeoutMs),
    check('s3', `bucket ${ctx.storage.bucket}`, (signal) => ctx.storage.headBucket(signal), timeoutMs),
  ]);
  const checks: Readiness['checks'] = { redis, s3, fal: { ok: true } };
  // An outage the work itself ran into (and a probe has not yet seen end) also makes the process unready.
  for (const o of await ctx.dependencies.outages(timeoutMs)) {
    const c = checks[o.dependency];
    if (c.ok) checks[o.dependency] = { ok: false, error: `${o.dependency}: unreachable since ${new Date(o.since).toISOString()} (${o.reason})` };
  }
  const down = Object.entries(checks).filter(([, c]) => !c.ok).map(([n]) => n);
  return { ready: down.length === 0, down, checks };
}
