// fal's submit: POST {owner}/{alias}[/path]?fal_webhook=… queues a request whatever its input (the
// runner validates it later, unless validateAt is 'submit') and answers its request id and URLs. The
// submit faults live here: a refused submit (429/500/503) and an answer lost after acceptance.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { parseJsonExactSeeds } from '../core/exactJson.ts';
import type { Logger } from '../core/logger.ts';
import type { Authorize } from './auth.ts';
import { chance, type EmulatorFaults, type StreamName } from './faults.ts';
import { readBody, sendJson } from './http.ts';
import type { EmulatedQueue } from './queue.ts';
import { requestUrls } from './requests.ts';
import { validateInput } from './schema.ts';
import type { EmulatorStats } from './stats.ts';

const MAX_BODY = 32 * 1024 * 1024;

export interface SubmitDeps {
  queue: EmulatedQueue;
  stats: EmulatorStats;
  authorized: Authorize;
  random: Record<StreamName, () => number>;
  /** The faults in force now (a test may change them while the emulator runs). */
  faults(): EmulatorFaults;
  validateAt?: 'runner' | 'submit';
  /** The emulator's base URL (known once it listens). */
  baseUrl(): string;
  logger?: Logger;
}

/** The handler of submit calls. */
export function submitCall(deps: SubmitDeps): (req: IncomingMessage, res: ServerResponse, url: URL, parts: string[], ns: number) => Promise<void> {
  const { queue, stats, authorized, random, logger } = deps;
  return async function submit(req: IncomingMessage, res: ServerResponse, url: URL, parts: string[], ns: number): Promise<void> {
    stats.submits++;
    if (!authorized(req, res)) return;
    const raw = await readBody(req, MAX_BODY);
    if (raw === undefined) return sendJson(res, 413, { detail: 'Request body too large' });
    if (chance(random.submit, deps.faults().submitErrorRate)) {
      stats.rejectedByFault++;
      const r = random.submit();
      if (r < 0.5) return sendJson(res, 429, { detail: 'Too many requests: rate limit exceeded' }, { 'retry-after': '1' });
      return sendJson(res, r < 0.75 ? 500 : 503, { detail: r < 0.75 ? 'Internal Server Error' : 'Service temporarily unavailable' });
    }
    let body: unknown = {};
    const text = raw.toString('utf8');
    if (text.trim() !== '') {
      try {
        body = parseJsonExactSeeds(text);
      } catch (err) {
        stats.validationErrors++;
        return sendJson(res, 422, { detail: [{ loc: ['body'], msg: `JSON decode error: ${(err as Error).message}`, type: 'json_invalid' }] });
      }
    }
    const webhookUrl = url.searchParams.get('fal_webhook') ?? undefined;
    if (webhookUrl !== undefined && !isHttpUrl(webhookUrl)) {
      stats.validationErrors++;
      return sendJson(res, 422, { detail: [{ loc: ['query', 'fal_webhook'], msg: 'Input should be a valid URL', type: 'url_parsing', input: webhookUrl }] });
    }
    let input;
    if (deps.validateAt === 'submit') {
      const v = validateInput(body);
      if (!v.ok) {
        stats.validationErrors++;
        return sendJson(res, 422, { detail: v.detail });
      }
      input = v.input;
    }
    const app = parts.slice(0, ns + 2).join('/');
    const falHeaders = Object.fromEntries(Object.entries(req.headers).filter(([k, v]) => k.startsWith('x-fal-') && typeof v === 'string')) as Record<string, string>;
    const r = queue.accept(parts.join('/'), app, body, webhookUrl, input, falHeaders);
    logger?.debug({ requestId: r.id, endpoint: r.endpoint }, 'emulator: request accepted');
    if (chance(random.ambiguous, deps.faults().ambiguousSubmitRate)) {
      // Accepted, then the answer is lost: the caller sees a reset connection, never the request id.
      stats.answersLost++;
      logger?.debug({ requestId: r.id }, 'emulator: submit answer lost (fault)');
      res.socket?.destroy();
      return;
    }
    const urls = requestUrls(deps.baseUrl(), app, r.id);
    sendJson(
      res,
      200,
      { request_id: r.id, gateway_request_id: r.id, status: 'IN_QUEUE', queue_position: queue.queuePosition(r.id), ...urls },
      { 'x-fal-request-id': r.id },
    );
  };
}

function isHttpUrl(value: string): boolean {
  try {
    const u = new URL(value);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}
