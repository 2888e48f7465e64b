// A stalled Redis (SIGSTOP, a frozen host or VM, a long blocking script) keeps its connections open
// and answers nothing: no error reaches ioredis, commands only wait, and nobody is told. A PING every
// `pingEveryMs` with a deadline of its own notices it: unanswered for `stalledAfterMs`, Redis is down
// for the tracker (one warning; its probe then sees Redis answer again: one recovery line). Commands
// themselves are left waiting rather than failed early (a command failed by a client-side timeout
// still runs when Redis resumes), so only this PING needs a deadline shorter than a stall.
import type { Redis } from 'ioredis';
import type { Dependencies } from './dependencies.ts';
import type { Policy } from './policy.ts';

/** Watches `redis` for stalls until the returned function is called. */
export function watchRedisStalls(redis: Redis, dependencies: Dependencies, policy: Policy['dependencies']['redisStall']): () => void {
  let waiting = false;
  const check = () => {
    if (waiting || redis.status !== 'ready' || dependencies.isDown('redis')) return;
    waiting = true;
    const deadline = setTimeout(() => {
      dependencies.down('redis', new Error(`no answer to PING within ${policy.stalledAfterMs} ms: Redis has stalled`));
    }, policy.stalledAfterMs);
    deadline.unref?.();
    redis
      .ping()
      .catch(() => undefined) // a closed connection is said by ioredis's own error
      .finally(() => {
        clearTimeout(deadline);
        waiting = false;
      });
  };
  const timer = setInterval(check, policy.pingEveryMs);
  timer.unref?.();
  return () => clearInterval(timer);
}
