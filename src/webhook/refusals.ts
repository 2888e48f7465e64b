// Why the receiver refuses a webhook, as codes an operator can count (metrics) and the error that
// lets the recording step refuse one it cannot place.
import type { ReceiverCounts } from '../core/metrics.ts';

export const REFUSAL_CODES = [
  'headers', // signature headers missing or malformed
  'user', // x-fal-webhook-user-id is not FAL_USER_ID
  'encoding', // a Content-Encoding other than identity
  'too_large', // over WEBHOOK_MAX_BODY_BYTES
  'busy', // too many bodies being read at once (503, fal re-delivers)
  'body', // the body could not be read (aborted, too slow)
  'signature', // the signature does not verify
  'malformed', // signed, but not a fal webhook body
  'too_deep', // signed, but nested too deeply to record
  'unplaceable', // signed, but names no row of ours: no valid URL token and no recorded request id
] as const;
export type RefusalCode = (typeof REFUSAL_CODES)[number];

export interface WebhookCounters extends ReceiverCounts {
  refused: Record<RefusalCode, number>;
}

export function newWebhookCounters(): WebhookCounters {
  return { received: 0, recorded: 0, batches: 0, refused: Object.fromEntries(REFUSAL_CODES.map((c) => [c, 0])) as Record<RefusalCode, number> };
}

/** Thrown by the record step for a verified webhook that must not be stored. */
export class WebhookRefused extends Error {
  override name = 'WebhookRefused';
  constructor(
    readonly status: number,
    readonly code: RefusalCode,
    message: string,
  ) {
    super(message);
  }
}
