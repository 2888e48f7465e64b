// Start-up checks: a command that cannot reach Redis or S3 fails within seconds with one sentence
// naming the variable and the address, instead of waiting forever on commands ioredis queues while it
// reconnects. Once a long-running role is up, an outage is said once and probed (see dependencies.ts).
import type { Redis } from 'ioredis';
import type { Context } from './context.ts';
import type { Storage } from './s3.ts';

/** An operational failure whose message is the one sentence the operator sees (exit 1, no stack). */
export class UnreachableError extends Error {
  override name = 'UnreachableError';
}

/** Whole budget of a start-up check: every command fails within 10 s. */
export const STARTUP_CHECK_MS = 5_000;

const NETWORK_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'connection timed out',
  ECONNRESET: 'connection reset',
};

function codeOf(err: unknown): string | undefined {
  let cur: unknown = err;
  for (let i = 0; i < 5 && cur && typeof cur === 'object'; i++) {
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

/** A short reason for a connection error: "connection refused", "authentication failed", … */
export function networkReason(err: unknown): string {
  const code = codeOf(err);
  if (code && NETWORK_REASONS[code]) return NETWORK_REASONS[code];
  const msg = err instanceof Error ? err.message : String(err);
  if (/WRONGPASS|NOAUTH|invalid password|invalid username/i.test(msg)) return 'authentication failed';
  return (code ?? msg.split('\n')[0]!).slice(0, 120);
}

/** host:port of a redis:// URL, without credentials. */
export function redisAddress(url: string): string {
  try {
    const u = new URL(url);
    return `${u.hostname}:${u.port || '6379'}`;
  } catch {
    return 'an unparsable address';
  }
}

/** Resolves once ioredis is ready; rejects after `timeoutMs` with one sentence naming REDIS_URL. */
export function waitForRedis(redis: Redis, url: string, timeoutMs = STARTUP_CHECK_MS): Promise<void> {
  if (redis.status === 'ready') return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    let last: unknown;
    const onError = (err: unknown) => {
      last = err;
    };
    const done = () => {
      clearTimeout(timer);
      redis.off('error', onError);
      redis.off('ready', onReady);
    };
    const onReady = () => {
      done();
      resolve();
    };
    const timer = setTimeout(() => {
      done();
      const why = last ? networkReason(last) : `no answer within ${Math.round(timeoutMs / 1000)} s`;
      reject(new UnreachableError(`cannot reach Redis at ${redisAddress(url)} (REDIS_URL): ${why}.`));
    }, timeoutMs);
    redis.on('error', onError);
    redis.once('ready', onReady);
  });
}

/** Where S3 is, for messages: the endpoint's host:port, or AWS's regional host. */
export function s3Address(s: { S3_ENDPOINT?: string; S3_REGION: string }): { variable: string; address: string } {
  if (s.S3_ENDPOINT) {
    try {
      return { variable: 'S3_ENDPOINT', address: new URL(s.S3_ENDPOINT).host };
    } catch {
      return { variable: 'S3_ENDPOINT', address: s.S3_ENDPOINT };
    }
  }
  return { variable: 'S3_REGION', address: `s3.${s.S3_REGION}.amazonaws.com` };
}

/**
 * Checks that the bucket exists and our credentials may use it (HEAD bucket). Network errors are
 * retried until the budget is spent; an HTTP answer decides at once.
 */
export async function checkBucket(
  storage: Storage,
  s: { S3_BUCKET: string; S3_ENDPOINT?: string; S3_REGION: string },
  timeoutMs = STARTUP_CHECK_MS,
): Promise<void> {
  const { variable, address } = s3Address(s);
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      await storage.headBucket(AbortSignal.timeout(Math.max(100, deadline - Date.now())), s.S3_BUCKET);
      return;
    } catch (err) {
      const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
      if (status === 404) throw new UnreachableError(`bucket ${s.S3_BUCKET} (S3_BUCKET) does not exist at ${address}; create it or set S3_BUCKET.`);
      if (status === 401 || status === 403) {
        throw new UnreachableError(
          `S3 at ${address} refused our credentials for bucket ${s.S3_BUCKET} (HTTP ${status}); check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.`,
        );
      }
      if (status === 301) throw new UnreachableError(`bucket ${s.S3_BUCKET} (S3_BUCKET) is not in region ${s.S3_REGION} (S3_REGION).`);
      if (status) throw new UnreachableError(`S3 at ${address} (${variable}) answered HTTP ${status} for bucket ${s.S3_BUCKET}.`);
      last = err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
  const why = last && (last as Error).name !== 'AbortError' && (last as Error).name !== 'TimeoutError' ? networkReason(last) : `no answer within ${Math.round(timeoutMs / 1000)} s`;
  throw new UnreachableError(`cannot reach S3 at ${address} (${variable}): ${why}.`);
}

/**
 * The start-up check of a command: Redis always, the bucket when the command uses S3. Fails within
 * seconds with one sentence naming the variable and the address, instead of hanging.
 */
export async function assertReachable(ctx: Pick<Context, 'cfg' | 'redis' | 'storage'>, needs: { s3?: boolean } = {}): Promise<void> {
  await Promise.all([waitForRedis(ctx.redis, ctx.cfg.REDIS_URL), needs.s3 ? checkBucket(ctx.storage, ctx.cfg) : undefined]);
}

/** "WEBHOOK_PORT: port 8080 on 0.0.0.0 is already in use." for a listen error; other errors pass through. */
export function listenError(err: unknown, what: string, port: number, host = '0.0.0.0'): unknown {
  const code = codeOf(err);
  if (code === 'EADDRINUSE') return new UnreachableError(`port ${port} on ${host} (${what}) is already in use by another program.`);
  if (code === 'EACCES') return new UnreachableError(`not allowed to listen on port ${port} on ${host} (${what}).`);
  return err;
}
