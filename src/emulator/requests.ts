// fal's calls on a request it accepted: status, result and cancel, at
// {owner}/{alias}/requests/{id}[/status|/cancel] (no endpoint sub-path), answered as fal does
// (202 while queued or running, typed errors with fal's headers, results kept as long as fal keeps them).
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../core/logger.ts';
import type { Authorize } from './auth.ts';
import { sendJson } from './http.ts';
import type { EmulatedQueue, EmulatedRequest } from './queue.ts';
import type { EmulatorStats } from './stats.ts';

/**
 * fal keeps a result 1 h after the request completes (6 min when it is 10 KB or more) unless payload
 * storage is on — on by default, 30 days; a submit's `X-Fal-Store-IO: 0` turns it off for that request.
 * After that the result call answers 404, while the status call still says COMPLETED.
 */
export interface ResultRetention {
  payloadStorage: boolean;
  storedMs: number;
  keptMs: number;
  largeKeptMs: number;
  largeBytes: number;
}

export const DEFAULT_RESULT_RETENTION: ResultRetention = {
  payloadStorage: true,
  storedMs: 30 * 86400_000,
  keptMs: 3600_000,
  largeKeptMs: 6 * 60_000,
  largeBytes: 10 * 1024,
};

/** The response, status and cancel URLs of a request, as fal puts them in its answers. */
export function requestUrls(baseUrl: string, app: string, id: string) {
  const responseUrl = `${baseUrl}/${app}/requests/${id}`;
  return { response_url: responseUrl, status_url: `${responseUrl}/status`, cancel_url: `${responseUrl}/cancel` };
}

export interface RequestCallDeps {
  queue: EmulatedQueue;
  stats: EmulatorStats;
  authorized: Authorize;
  /** The emulator's base URL (known once it listens). */
  baseUrl(): string;
  retention: ResultRetention;
  logger?: Logger;
}

/** The handler of status, result and cancel calls. */
export function requestCalls(deps: RequestCallDeps): (req: IncomingMessage, res: ServerResponse, url: URL, parts: string[], ns: number) => void {
  /** status, result and cancel: {owner}/{alias}/requests/{id}[/status|/cancel] (no endpoint sub-path). */
  function requestCall(req: IncomingMessage, res: ServerResponse, url: URL, parts: string[], ns: number): void {
    const { queue, stats, authorized, logger } = deps;
    const [id, action, ...rest] = parts.slice(ns + 3);
    const method = req.method ?? 'GET';
    if (!authorized(req, res)) return;
    req.resume();
    const app = parts.slice(0, ns + 2).join('/');
    const r = id ? queue.get(id) : undefined;
    if (!r || r.app !== app || rest.length > 0) return sendJson(res, 404, { detail: 'Request not found' });
    const headers = { 'x-fal-request-id': r.id };
    // Like fal: 202 while queued or running, 200 once completed.
    if (action === 'status' && method === 'GET') {
      stats.statusCalls++;
      return sendJson(res, r.status === 'COMPLETED' ? 200 : 202, statusBody(r, url.searchParams.get('logs') === '1'), headers);
    }
    if (action === undefined && method === 'GET') {
      stats.resultCalls++;
      if (r.status !== 'COMPLETED') return sendJson(res, 400, { detail: 'Request is still in progress' }, headers);
      if (resultExpired(r)) {
        stats.resultsExpired++;
        return sendJson(res, 404, { detail: 'Request result not found: it is no longer stored' }, headers);
      }
      if (r.failure) {
        // Model errors: {detail: [typed entries]}; request errors: {detail: string, error_type}.
        const body = r.failure.kind === 'request' ? { detail: r.failure.detail, error_type: r.failure.type } : { detail: r.failure.detail };
        return sendJson(res, r.failure.status, body, {
          ...headers,
          'x-fal-error-type': r.failure.type,
          'x-fal-retryable': String(r.failure.retryable ?? r.failure.status >= 500),
          ...(r.failure.timeoutType ? { 'x-fal-request-timeout-type': r.failure.timeoutType } : {}),
        });
      }
      return sendJson(res, 200, r.output, headers);
    }
    if (action === 'cancel' && method === 'PUT') {
      stats.cancelCalls++;
      const outcome = queue.cancel(r);
      if (outcome === 'already_completed') return sendJson(res, 400, { status: 'ALREADY_COMPLETED' }, headers);
      logger?.debug({ requestId: r.id, outcome }, 'emulator: cancellation requested');
      return sendJson(res, 202, { status: 'CANCELLATION_REQUESTED' }, headers);
    }
    if (action === undefined || action === 'status' || action === 'cancel') return sendJson(res, 405, { detail: 'Method Not Allowed' });
    return sendJson(res, 404, { detail: 'Not Found' });
  }

  /** Whether fal no longer keeps this completed request's result (see ResultRetention). */
  function resultExpired(r: EmulatedRequest, now = Date.now()): boolean {
    if (!r.completedAt) return false;
    const storeIo = (r.falHeaders['x-fal-store-io'] ?? '').trim().toLowerCase();
    const { retention } = deps;
    const stored = retention.payloadStorage ? storeIo !== '0' && storeIo !== 'false' : storeIo === '1' || storeIo === 'true';
    if (stored) return now - r.completedAt > retention.storedMs;
    const size = r.output ? Buffer.byteLength(JSON.stringify(r.output, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))) : 0;
    return now - r.completedAt > (size >= retention.largeBytes ? retention.largeKeptMs : retention.keptMs);
  }

  function statusBody(r: EmulatedRequest, withLogs: boolean): Record<string, unknown> {
    const body: Record<string, unknown> = { status: r.status, request_id: r.id, ...requestUrls(deps.baseUrl(), r.app, r.id) };
    if (r.status === 'IN_QUEUE') body.queue_position = deps.queue.queuePosition(r.id);
    if (withLogs) body.logs = r.logs;
    if (r.status === 'COMPLETED' && r.startedAt && r.completedAt) body.metrics = { inference_time: (r.completedAt - r.startedAt) / 1000 };
    if (r.failure) Object.assign(body, { error: r.failure.message, error_type: r.failure.type });
    return body;
  }

  return requestCall;
}
