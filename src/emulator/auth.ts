// fal's key check: `Authorization: Key <key>` on every queue and storage call. No key, or one the
// emulator was not given, is 401; a forbidden key (an account locked for its balance) is 403.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { sendJson } from './http.ts';
import type { EmulatorStats } from './stats.ts';

/** Answers 401 or 403 itself (draining the body) and says false when the call may not go on. */
export type Authorize = (req: IncomingMessage, res: ServerResponse) => boolean;

export interface KeyOptions {
  /** Keys accepted; default: any non-empty key. */
  apiKeys?: string[];
  /** Keys answered 403. */
  forbiddenKeys?: string[];
}

/** Whether the call may go on: 401 without a (known) key, 403 for a forbidden one. */
export function keyCheck(opts: KeyOptions, stats: EmulatorStats): Authorize {
  return function authorized(req: IncomingMessage, res: ServerResponse): boolean {
    const apiKey = /^Key\s+(\S.*)$/i.exec(req.headers.authorization ?? '')?.[1]?.trim();
    if (!apiKey || (opts.apiKeys && !opts.apiKeys.includes(apiKey))) {
      stats.unauthorized++;
      req.resume();
      sendJson(res, 401, { detail: apiKey ? 'Invalid API key' : 'Missing authorization header: use `Authorization: Key <your fal key>`' });
      return false;
    }
    if (opts.forbiddenKeys?.includes(apiKey)) {
      stats.unauthorized++;
      req.resume();
      sendJson(res, 403, { detail: 'User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing.' });
      return false;
    }
    return true;
  };
}
