// Wrong dashboard tokens, counted per client address in Redis (so every admin listener of the
// deployment counts together): after policy.dashboard.signInFailures within the window the address is
// locked out (429 + Retry-After) for firstLockoutSeconds, doubling with each lockout remembered
// (lockoutMemorySeconds), up to maxLockoutSeconds. One log line per lockout, none per request.
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { Policy } from '../../core/policy.ts';
import { dashboardKeys } from './keys.ts';

/**
 * KEYS: failures, lock, lockouts. ARGV: signInFailures, signInWindowSeconds, firstLockoutMs,
 * maxLockoutMs, lockoutMemorySeconds.
 * Replies: {0, failures} counted, not locked; {1, lockMs, lockoutNumber} locked out from now.
 */
const RECORD_FAILURE = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
if n < tonumber(ARGV[1]) then return {0, n} end
redis.call('DEL', KEYS[1])
local k = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[5])
local ms = math.floor(math.min(tonumber(ARGV[3]) * 2 ^ math.min(k - 1, 40), tonumber(ARGV[4])))
redis.call('SET', KEYS[2], k, 'PX', ms)
return {1, ms, k}`;

export interface SignInThrottle {
  /** Seconds the client must still wait, or 0 when it may try. */
  lockedFor(client: string): Promise<number>;
  /** Counts a wrong token; answers the seconds of the lockout it started, or 0. */
  failed(client: string): Promise<number>;
  /** A right token: the client's count of failures starts again. */
  succeeded(client: string): Promise<void>;
}

export function signInThrottle(redis: Redis, policy: Policy['dashboard'], logger: Logger): SignInThrottle {
  return {
    async lockedFor(client) {
      const ms = await redis.pttl(dashboardKeys.signInLock(client));
      return ms > 0 ? Math.ceil(ms / 1000) : 0;
    },
    async failed(client) {
      const keys = [dashboardKeys.signInFailures(client), dashboardKeys.signInLock(client), dashboardKeys.signInLockouts(client)];
      const args = [policy.signInFailures, policy.signInWindowSeconds, policy.firstLockoutSeconds * 1000, policy.maxLockoutSeconds * 1000, policy.lockoutMemorySeconds];
      const [locked, ms, lockout] = (await redis.eval(RECORD_FAILURE, keys.length, ...keys, ...args)) as number[];
      if (!locked) return 0;
      const seconds = Math.ceil(ms! / 1000);
      logger.warn(
        { client, lockoutSeconds: seconds, lockout, failures: policy.signInFailures },
        `dashboard sign-in locked for ${client}: ${policy.signInFailures} wrong tokens; refused for ${seconds} s (lockout ${lockout} in ${Math.round(policy.lockoutMemorySeconds / 3600)} h)`,
      );
      return seconds;
    },
    async succeeded(client) {
      await redis.del(dashboardKeys.signInFailures(client));
    },
  };
}
