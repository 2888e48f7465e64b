// The one place the official @fal-ai/client is set up. It stays unmodified: FAL_QUEUE_URL is applied
// through its requestMiddleware (fal storage's https://rest.fal.ai too, when FAL_QUEUE_URL is not fal's), and its fetch is wrapped so that transient failures surface at once
// as typed errors: the retry policy (BullMQ backoff, Retry-After, auth pause) lives in our workers,
// not in a hidden inner retry loop that would multiply delays and submissions.
import type * as FalSdk from '@fal-ai/client';
import type { FalClient } from '@fal-ai/client';
import type { Config } from './config.ts';
import { FAL_QUEUE_HOST } from './config.ts';
import { quoteSeeds } from './exactJson.ts';
import { FalAmbiguousError, FalAuthError, FalNotFoundError, FalRejectedError, FalStartTimeoutError, FalTransientError } from './errors.ts';
import { falErrorInfo, type FalErrorInfo } from './falErrors.ts';
import { lazyPackage } from './lazyPackage.ts';

/** The client package, loaded with the first client (see lazyPackage.ts). */
const falSdk = lazyPackage<typeof FalSdk>('@fal-ai/client');

export type { FalClient };

/** Connection errors raised before a request is sent: fal cannot have accepted anything. */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'UND_ERR_CONNECT_TIMEOUT']);

function networkCode(err: unknown): string | undefined {
  const seen = new Set<unknown>();
  let cur: unknown = err;
  while (cur && typeof cur === 'object' && !seen.has(cur)) {
    seen.add(cur);
    const code = (cur as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  const secs = Number(value);
  if (Number.isFinite(secs)) return Math.max(0, secs * 1000);
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/** Where the client sends fal storage calls (`fal.storage.upload`); it has no setting for it. */
export const FAL_REST_HOST = 'https://rest.fal.ai';

/** A client URL rewritten to FAL_QUEUE_URL: the queue always, fal storage when FAL_QUEUE_URL is not fal's own (the emulator serves both). */
export function falUrl(url: string, queueUrl: string): string {
  const base = queueUrl.replace(/\/+$/, '');
  if (url.startsWith(FAL_QUEUE_HOST)) return base + url.slice(FAL_QUEUE_HOST.length);
  if (base !== FAL_QUEUE_HOST && url.startsWith(FAL_REST_HOST)) return base + url.slice(FAL_REST_HOST.length);
  return url;
}

export function createFal(cfg: Pick<Config, 'FAL_KEY' | 'FAL_QUEUE_URL'>, timeoutMs = 30_000): FalClient {
  const guardedFetch: typeof fetch = async (input, init) => {
    let res: Response;
    try {
      res = await fetch(input, { ...init, signal: init?.signal ?? AbortSignal.timeout(timeoutMs) });
    } catch (err) {
      const code = networkCode(err);
      // No `cause`: the fal client would find the code there and retry on its own.
      if (code && NOT_SENT_CODES.has(code)) throw new FalTransientError(`fal unreachable (${code})`);
      throw new FalAmbiguousError(`fal call interrupted (${code ?? (err as Error).name}): ${(err as Error).message}`);
    }
    if (res.status === 429 || res.status >= 500) {
      const full = await res.text().catch(() => '');
      const text = full.slice(0, 300);
      // fal's own words on the failure (X-Fal-Error-Type, X-Fal-Retryable, the body's error_type).
      const info = falErrorInfo(res.status, res.headers, parseJson(full));
      if (info.timeoutType === 'user' && res.status === 504) {
        // Our start timeout ran out: an answer about the request, not a hiccup to retry (fal-js agrees).
        throw new FalStartTimeoutError(`fal did not start it within QUEUE_DEADLINE_MS (504, start timeout)${text ? `: ${text}` : ''}`, 504, info);
      }
      throw new FalTransientError(`fal answered ${res.status}${text ? `: ${text}` : ''}`, res.status, parseRetryAfter(res.headers.get('retry-after')), info);
    }
    return withExactSeeds(res);
  };
  return falSdk().createFalClient({
    credentials: cfg.FAL_KEY,
    suppressLocalCredentialsWarning: true,
    fetch: guardedFetch,
    requestMiddleware: async (req) => ({ ...req, url: falUrl(req.url, cfg.FAL_QUEUE_URL) }),
  });
}

/**
 * The response with every integer `"seed"` quoted, so the client's response.json() keeps fal's 64-bit
 * seeds exactly (as strings) instead of rounding them to a double.
 */
async function withExactSeeds(res: Response): Promise<Response> {
  if (!(res.headers.get('content-type') ?? '').includes('application/json') || res.status === 204 || res.status === 304) return res;
  const text = await res.text();
  const headers = new Headers(res.headers);
  headers.delete('content-length');
  headers.delete('content-encoding');
  return new Response(quoteSeeds(text), { status: res.status, statusText: res.statusText, headers });
}

/** Maps whatever a fal call threw to one of our typed errors. */
export function classifyFalError(err: unknown): Error {
  if (
    err instanceof FalTransientError ||
    err instanceof FalAmbiguousError ||
    err instanceof FalAuthError ||
    err instanceof FalRejectedError ||
    err instanceof FalStartTimeoutError ||
    err instanceof FalNotFoundError
  ) {
    return err;
  }
  const status = (err as { status?: unknown }).status;
  if (typeof status === 'number') {
    const body = (err as { body?: unknown }).body;
    const detail = describeDetail(body) ?? (err as Error).message;
    // The client's ApiError keeps the body and the timeout type, not the other headers.
    const info: FalErrorInfo = falErrorInfo(status, undefined, body);
    const timeoutType = (err as { timeoutType?: unknown }).timeoutType;
    if (typeof timeoutType === 'string' && timeoutType) info.timeoutType = timeoutType;
    if (status === 401 || status === 403) return new FalAuthError(`fal refused the API key (${status}): ${detail}`, status, info);
    if (status === 404) return new FalNotFoundError(`fal does not know this request (404): ${detail}`);
    if (status === 504 && info.timeoutType === 'user') return new FalStartTimeoutError(`fal did not start it within QUEUE_DEADLINE_MS (504, start timeout): ${detail}`, 504, info);
    if (status === 429 || status >= 500) return new FalTransientError(`fal answered ${status}: ${detail}`, status, undefined, info);
    return new FalRejectedError(`fal rejected the input (${status}): ${detail}`, status, info);
  }
  return new FalAmbiguousError(`fal call failed: ${(err as Error)?.message ?? String(err)}`);
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

/** fal's error bodies: `{detail: string}` or pydantic `{detail: [{loc, msg}]}`. */
export function describeDetail(body: unknown): string | undefined {
  if (!body || typeof body !== 'object') return typeof body === 'string' ? body : undefined;
  const detail = (body as { detail?: unknown }).detail;
  if (typeof detail === 'string') return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((d: { loc?: unknown[]; msg?: string }) => `${Array.isArray(d.loc) ? d.loc.filter((l) => l !== 'body').join('.') : ''}: ${d.msg ?? JSON.stringify(d)}`)
      .join('; ');
  }
  return JSON.stringify(body).slice(0, 500);
}
