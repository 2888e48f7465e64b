// Signed-in browsers: a random session id in the cookie, the session itself in Redis with a TTL, so
// sign-out (DEL) ends it everywhere and an expired one is gone without clean-up. One key per session.
// The value is a fingerprint of DASHBOARD_TOKEN: changing the token signs every browser out.
import { randomBytes } from 'node:crypto';
import type { Redis } from 'ioredis';
import { dashboardKeys } from './keys.ts';

/** 32 random bytes, hex. */
const SESSION_ID = /^[0-9a-f]{64}$/;

export interface Sessions {
  create(): Promise<string>;
  valid(id: string | undefined): Promise<boolean>;
  revoke(id: string | undefined): Promise<void>;
}

export function sessionStore(redis: Redis, fingerprint: string, ttlSeconds: number): Sessions {
  return {
    async create() {
      const id = randomBytes(32).toString('hex');
      await redis.set(dashboardKeys.session(id), fingerprint, 'EX', ttlSeconds);
      return id;
    },
    async valid(id) {
      if (!id || !SESSION_ID.test(id)) return false;
      return (await redis.get(dashboardKeys.session(id))) === fingerprint;
    },
    async revoke(id) {
      if (id && SESSION_ID.test(id)) await redis.del(dashboardKeys.session(id));
    },
  };
}
