// The triggers' atomic Redis transitions, one Lua file each in ./commands (BullMQ's conventions: every
// key in KEYS, replies are named codes checked here).
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { UnexpectedReplyError } from '../core/rowState.ts';

const COMMANDS = {
  fireTick: ['fire', 'again', 'skip', 'stale'],
  failTick: ['ok', 'noop'],
  renewClaim: ['ok', 'lost'],
  releaseClaim: ['ok', 'lost'],
} as const;
type Name = keyof typeof COMMANDS;
export type TriggerReply<N extends Name> = (typeof COMMANDS)[N][number];

const scripts = Object.fromEntries(
  (Object.keys(COMMANDS) as Name[]).map((name) => [name, readFileSync(new URL(`./commands/${name}.lua`, import.meta.url), 'utf8')]),
) as Record<Name, string>;

/** Runs one trigger command on `redis` and checks its reply. */
export async function triggerCommand<N extends Name>(redis: Redis, name: N, keys: string[], args: (string | number)[]): Promise<TriggerReply<N>> {
  const r = redis as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>;
  if (!r[`pbt_${name}`]) redis.defineCommand(`pbt_${name}`, { lua: scripts[name] });
  const reply = await r[`pbt_${name}`]!.call(redis, keys.length, ...keys, ...args);
  if (!(COMMANDS[name] as readonly unknown[]).includes(reply)) {
    throw new UnexpectedReplyError(`Redis command ${name} answered ${JSON.stringify(reply)}, not one of ${COMMANDS[name].join(', ')}`);
  }
  return reply as TriggerReply<N>;
}
