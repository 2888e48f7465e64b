// Errors that say what to do with them. Every fal call funnels its failures into one of these.
import type { FalErrorInfo } from './falErrors.ts';

/** fal did not accept the call (429, 5xx, connection refused): safe to try again later. */
export class FalTransientError extends Error {
  override name = 'FalTransientError';
  constructor(
    message: string,
    readonly status?: number,
    /** From Retry-After, when fal sent one. */
    readonly retryAfterMs?: number,
    /** fal's error type and retry headers, when it answered (see falErrors.ts). */
    readonly fal?: FalErrorInfo,
  ) {
    super(message);
  }
}

/** The call may or may not have reached fal (connection reset or timeout after sending). */
export class FalAmbiguousError extends Error {
  override name = 'FalAmbiguousError';
}

/** A final answer from fal with an HTTP status. */
abstract class FalStatusError extends Error {
  constructor(
    message: string,
    readonly status: number,
    /** fal's error type and retry headers (see falErrors.ts). */
    readonly fal?: FalErrorInfo,
  ) {
    super(message);
  }
}

/** fal refused our credentials (401/403): retrying only hammers fal; submissions pause. */
export class FalAuthError extends FalStatusError {
  override name = 'FalAuthError';
}

/** fal rejected this input (422 and other 4xx): retrying cannot help; the row fails with fal's detail. */
export class FalRejectedError extends FalStatusError {
  override name = 'FalRejectedError';
}

/**
 * fal answered 504 with X-Fal-Request-Timeout-Type: user: the start timeout we sent
 * (QUEUE_DEADLINE_MS) ran out before a runner took the request. Never retried (fal-js does not either).
 */
export class FalStartTimeoutError extends FalStatusError {
  override name = 'FalStartTimeoutError';
}

/** fal does not know the request (404 on status/result): it was lost. */
export class FalNotFoundError extends Error {
  override name = 'FalNotFoundError';
}

/** A result image could not be fetched or is not acceptable; `permanent` ones are not retried. */
export class DownloadError extends Error {
  override name = 'DownloadError';
  constructor(
    message: string,
    readonly permanent: boolean,
    /** The row's error type when this failure ends it (falErrors.ts LOCAL_ERROR_TYPES), e.g. result_expired. */
    readonly errorType?: string,
    /** The HTTP status the image's server answered, when it answered one (a 404 on a fal file: see falForgot.ts). */
    readonly status?: number,
  ) {
    super(message);
  }
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
