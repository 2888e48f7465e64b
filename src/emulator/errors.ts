// fal's error kinds as the emulator plays them, from fal's pages on request errors (flat
// {detail, error_type}, the same type in X-Fal-Error-Type) and model errors (422, {detail: [{loc, msg,
// type, url, input}]}), with X-Fal-Retryable as fal documents it ("retrying the exact same request
// might succeed"). Each one can be injected by rate (faults.errorRates), so every path has a test.
import { ModelFailure } from './model.ts';

export interface EmulatedError {
  status: number;
  shape: 'request' | 'model';
  retryable: boolean;
  /** Request errors: the `detail` string; model errors: the entry's `msg`. */
  message: string;
  /** Model errors: where the problem is. */
  loc?: (string | number)[];
}

const req = (status: number, retryable: boolean, message: string): EmulatedError => ({ status, shape: 'request', retryable, message });
const mod = (message: string, loc: (string | number)[] = ['body', 'image_urls', 0]): EmulatedError => ({ status: 422, shape: 'model', retryable: false, message, loc });

export const EMULATED_ERRORS = {
  request_timeout: req(504, true, 'Request timed out'),
  startup_timeout: req(504, true, 'The runner did not start within the allowed time'),
  runner_scheduling_failure: req(503, true, 'No runner could be allocated to handle the request'),
  runner_connection_timeout: req(503, true, 'The connection to the runner timed out'),
  runner_disconnected: req(503, true, 'The runner disconnected unexpectedly during processing'),
  runner_connection_refused: req(503, true, 'The runner refused the connection'),
  runner_connection_error: req(503, true, 'A connection error occurred with the runner'),
  runner_incomplete_response: req(502, true, 'The runner sent an incomplete response payload'),
  runner_server_error: req(500, true, 'The runner encountered an internal server error'),
  internal_error: req(500, true, 'An unexpected internal error occurred'),
  internal_server_error: req(500, true, 'Internal server error'),
  client_disconnected: req(499, false, 'The client closed the connection before the response was sent'),
  client_cancelled: req(499, false, 'Request was cancelled by the client'),
  bad_request: req(400, false, 'The request was malformed'),
  image_load_error: mod('Failed to load the image. Please ensure it is a valid image in a supported format.'),
  file_download_error: mod('Failed to download the file. Please check if the URL is accessible.'),
  image_too_small: mod('Image dimensions are too small.'),
  image_too_large: mod('Image dimensions exceed the maximum allowed.'),
  file_too_large: mod('File size exceeds the maximum allowed.'),
  content_policy_violation: mod('The content was flagged by a content checker.'),
  no_media_generated: mod('The model did not generate any media.', ['body']),
} as const satisfies Record<string, EmulatedError>;

export type EmulatedErrorType = keyof typeof EMULATED_ERRORS;

/** The failure a runner reports for `type`, in fal's shape for it. */
export function emulatedFailure(type: EmulatedErrorType, input?: string): ModelFailure {
  const e: EmulatedError = EMULATED_ERRORS[type];
  const msg = `${e.message} (emulated fault)`;
  if (e.shape === 'request') return new ModelFailure(e.status, type, msg, msg, 'request', e.retryable);
  const entry: Record<string, unknown> = { loc: e.loc, msg, type, url: `https://docs.fal.ai/errors#${type}` };
  if (input !== undefined) entry.input = input;
  if (type === 'content_policy_violation') entry.categories = ['model_moderated'];
  return new ModelFailure(e.status, type, msg, [entry], 'model', e.retryable);
}

/** Which error (if any) a request meets, by `rates` (type → share of requests); one draw either way. */
export function pickError(random: () => number, rates: Partial<Record<string, number>> | undefined): EmulatedErrorType | undefined {
  const r = random();
  let acc = 0;
  for (const type of Object.keys(EMULATED_ERRORS) as EmulatedErrorType[]) {
    acc += rates?.[type] ?? 0;
    if (r < acc) return type;
  }
  return undefined;
}
