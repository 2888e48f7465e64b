// fal's error kinds as data: what each `error_type` (request errors: X-Fal-Error-Type and the body's
// `error_type`) and each model error's `detail[].type` means for a row — may one more attempt help,
// did fal bill it, and which report category it falls in. Read against fal's pages on request errors,
// model errors, retries and billing: fal retries 503/504 itself (up to 10 times) before it answers,
// never bills a server error (5xx), and may bill a 422 (a runner may have used GPU time first).
// `X-Fal-Retryable` (and its older spelling `X-Fal-Needs-Retry`), when fal sends it, overrides the
// table's `retryable`; a start timeout (504 with `X-Fal-Request-Timeout-Type: user`) is never retried.

/** What a user does about a failed row: fix the input, change the prompt/face, run again, give it time… */
export const ERROR_CATEGORIES = ['input', 'content_policy', 'fal_transient', 'timeout', 'canceled', 'storage', 'other'] as const;
export type ErrorCategory = (typeof ERROR_CATEGORIES)[number];

export type Billed = 'yes' | 'no' | 'maybe';

export interface FalErrorKind {
  /** fal's HTTP status for it (the result call's, and the ERROR webhook's "Invalid status code"). */
  status: number;
  /** 'request': flat {detail, error_type}; 'model': {detail: [{loc, msg, type, url, input}]}. */
  shape: 'request' | 'model';
  /** May a new attempt of the same input succeed (when fal sends no X-Fal-Retryable)? */
  retryable: boolean;
  billed: Billed;
  category: ErrorCategory;
}

const request = (status: number, retryable: boolean, billed: Billed, category: ErrorCategory): FalErrorKind => ({ status, shape: 'request', retryable, billed, category });
const model = (category: ErrorCategory, status = 422): FalErrorKind => ({ status, shape: 'model', retryable: false, billed: 'maybe', category });

/** Every error type fal documents, and what it means here. */
export const FAL_ERROR_TYPES = {
  // Request errors (fal's "Request Error Types"): infrastructure, never billed when 5xx.
  request_timeout: request(504, false, 'no', 'timeout'), // the app's processing time ran out; fal already retried it
  startup_timeout: request(504, true, 'no', 'fal_transient'),
  runner_scheduling_failure: request(503, true, 'no', 'fal_transient'),
  runner_connection_timeout: request(503, true, 'no', 'fal_transient'),
  runner_disconnected: request(503, true, 'no', 'fal_transient'),
  runner_connection_refused: request(503, true, 'no', 'fal_transient'),
  runner_connection_error: request(503, true, 'no', 'fal_transient'),
  runner_incomplete_response: request(502, true, 'no', 'fal_transient'),
  runner_server_error: request(500, true, 'no', 'fal_transient'), // 500: fal does not retry it itself
  internal_error: request(500, true, 'no', 'fal_transient'),
  internal_server_error: request(500, true, 'no', 'fal_transient'),
  client_disconnected: request(499, false, 'maybe', 'canceled'),
  client_cancelled: request(499, false, 'maybe', 'canceled'),
  bad_request: request(400, false, 'no', 'other'), // our request was malformed (e.g. a bad timeout header)
  // Model errors (fal's "Model Errors"): the input, as fal saw it; may be billed.
  image_load_error: model('input'),
  file_download_error: model('input'),
  image_too_small: model('input'),
  image_too_large: model('input'),
  file_too_large: model('input'),
  content_policy_violation: model('content_policy'),
  no_media_generated: model('other'),
} as const satisfies Record<string, FalErrorKind>;

export type FalErrorType = keyof typeof FAL_ERROR_TYPES;

/** Our own failure types (not fal's), so every failed row has an error_type and a category. */
export const LOCAL_ERROR_TYPES = {
  /** fal answered 504 with X-Fal-Request-Timeout-Type: user: it did not start the request within QUEUE_DEADLINE_MS. */
  start_timeout: 'timeout',
  /** Our own deadline ran out (ROW_DEADLINE_MS, or QUEUE_DEADLINE_MS when fal never said so). */
  deadline: 'timeout',
  /** A COMPLETED request whose result fal no longer keeps (404 on the result call). */
  result_expired: 'storage',
  /** The result could not be downloaded or stored in S3. */
  store_failed: 'storage',
  /** The face was refused before it was sent (an s3:// face outside the allowed buckets). */
  face_refused: 'input',
  /** Preflight could not read the face (unreachable, 4xx, a private address): the row is rejected, never sent. */
  face_unreachable: 'input',
  /** Preflight found no PNG, JPEG or WEBP header in the face. */
  face_not_image: 'input',
  /** Preflight read a face under MIN_FACE_PX on a side. */
  face_too_small: 'input',
  /** Preflight read a face over MAX_FACE_MEGAPIXELS or MAX_FACE_BYTES. */
  face_too_large: 'input',
  /** fal lost the request, or a submission's fate stayed unknown, on every attempt. */
  lost: 'fal_transient',
  /** fal refused the submission itself (429/5xx) on every try. */
  submit_failed: 'fal_transient',
  /** The run was canceled or stopped. */
  run_canceled: 'canceled',
} as const satisfies Record<string, ErrorCategory>;

/** Everything fal told us about one failure. */
export interface FalErrorInfo {
  /** HTTP status (of the call, or of the request, from the ERROR webhook's "Invalid status code: N"). */
  status?: number;
  /** fal's error type: X-Fal-Error-Type, the body's error_type, or the first detail entry's type. */
  type?: string;
  /** X-Fal-Retryable / X-Fal-Needs-Retry, when sent. */
  retryableHeader?: boolean;
  /** X-Fal-Request-Timeout-Type ('user': the start timeout we asked for ran out). */
  timeoutType?: string;
}

/** What a failure means for its row. */
export interface FailureVerdict {
  type: string;
  category: ErrorCategory;
  /** A new attempt may succeed and fal did not bill this one. */
  retry: boolean;
  billed: Billed;
  /** fal's start timeout (never retried). */
  startTimeout: boolean;
}

const known = (type: string | undefined): FalErrorKind | undefined =>
  type !== undefined && Object.hasOwn(FAL_ERROR_TYPES, type) ? FAL_ERROR_TYPES[type as FalErrorType] : undefined;

/**
 * The verdict on a failure fal reported. Unknown types fall back on the status: 5xx is fal's
 * (unbilled, retryable), a 422 (pydantic's own types, e.g. `less_than_equal`) is the input (maybe
 * billed), 499 a cancel, other 4xx our request. X-Fal-Retryable overrides `retryable`; a retry is
 * made only of what fal did not bill, so a failure is never paid twice.
 */
export function verdictOf(info: FalErrorInfo): FailureVerdict {
  if (info.status === 504 && info.timeoutType === 'user') {
    return { type: 'start_timeout', category: 'timeout', retry: false, billed: 'no', startTimeout: true };
  }
  const kind = known(info.type);
  const status = info.status ?? kind?.status;
  const fallback: FalErrorKind =
    status === undefined
      ? request(0, false, 'maybe', 'other')
      : status >= 500
        ? request(status, true, 'no', 'fal_transient')
        : status === 499
          ? request(status, false, 'maybe', 'canceled')
          : status === 422
            ? model('input')
            : request(status, false, 'no', 'other');
  const k = kind ?? fallback;
  const retryable = info.retryableHeader ?? k.retryable;
  return { type: info.type ?? (status ? `http_${status}` : 'unknown'), category: k.category, retry: retryable && k.billed === 'no', billed: k.billed, startTimeout: false };
}

/** A header's boolean ("true"/"false", "1"/"0"); undefined when absent or neither. */
function headerBool(v: string | null | undefined): boolean | undefined {
  const s = v?.trim().toLowerCase();
  if (s === 'true' || s === '1' || s === 'yes') return true;
  if (s === 'false' || s === '0' || s === 'no') return false;
  return undefined;
}

/** fal's error type from a body: the flat `error_type`, or the first typed `detail` entry's `type`. */
export function typeFromBody(body: unknown): string | undefined {
  if (!body || typeof body !== 'object') return undefined;
  const b = body as { error_type?: unknown; detail?: unknown };
  if (typeof b.error_type === 'string' && b.error_type) return b.error_type;
  if (Array.isArray(b.detail)) {
    const first = b.detail.find((d: unknown) => d && typeof d === 'object' && typeof (d as { type?: unknown }).type === 'string') as { type: string } | undefined;
    return first?.type;
  }
  return undefined;
}

/** What an HTTP answer of fal says about its failure: headers first, the body where they are silent. */
export function falErrorInfo(status: number, headers: { get(name: string): string | null } | undefined, body: unknown): FalErrorInfo {
  const info: FalErrorInfo = { status };
  const type = headers?.get('x-fal-error-type')?.trim() || typeFromBody(body);
  if (type) info.type = type;
  const retryable = headerBool(headers?.get('x-fal-retryable')) ?? headerBool(headers?.get('x-fal-needs-retry'));
  if (retryable !== undefined) info.retryableHeader = retryable;
  const timeoutType = headers?.get('x-fal-request-timeout-type')?.trim();
  if (timeoutType) info.timeoutType = timeoutType;
  return info;
}

/** An ERROR webhook's failure: the type from its payload, the status from its `error` ("Invalid status code: 500"). */
export function webhookErrorInfo(error: string | null | undefined, payload: unknown): FalErrorInfo {
  const info: FalErrorInfo = {};
  const status = /\b([1-5]\d\d)\b/.exec(error ?? '')?.[1];
  if (status) info.status = Number(status);
  const type = typeFromBody(payload);
  if (type) info.type = type;
  return info;
}

/** The category of a type (fal's or ours); 'other' for anything unknown. */
export function categoryOfType(type: string | undefined): ErrorCategory {
  if (!type) return 'other';
  const kind = known(type);
  if (kind) return kind.category;
  if (Object.hasOwn(LOCAL_ERROR_TYPES, type)) return LOCAL_ERROR_TYPES[type as keyof typeof LOCAL_ERROR_TYPES];
  return 'other';
}

/** A comma list of categories (`retry --only`), or the name of the first that is none. */
export function parseCategories(list: string): { ok: true; categories: ErrorCategory[] } | { ok: false; bad: string } {
  const parts = list.split(',').map((s) => s.trim()).filter(Boolean);
  for (const p of parts) if (!(ERROR_CATEGORIES as readonly string[]).includes(p)) return { ok: false, bad: p };
  if (!parts.length) return { ok: false, bad: list };
  return { ok: true, categories: [...new Set(parts)] as ErrorCategory[] };
}
