// Checks a fal webhook before anything trusts it: headers present, timestamp within the tolerance,
// ED25519 signature (src/core/webhookSignature.ts) over the raw bytes by one of fal's current keys.
import type { KeyObject } from 'node:crypto';
import { TIMESTAMP_TOLERANCE_SECONDS, WEBHOOK_HEADERS, verifyWebhookSignature, type SignedFields } from '../core/webhookSignature.ts';
import type { JwksCache } from './jwks.ts';

export type VerifyResult = { ok: true; requestId: string; userId: string } | { ok: false; reason: string };

type HeaderBag = Record<string, string | string[] | undefined>;

/** A header by its lower-case name (Node's IncomingHttpHeaders); a repeated header counts by its first value. */
function header(headers: HeaderBag, name: string): string | undefined {
  const v = headers[name];
  const s = Array.isArray(v) ? v[0] : v;
  return s === undefined ? undefined : s.trim();
}

/**
 * Verifies fal's webhook headers and signature over `rawBody`. The signature carries no key id, so any
 * current key may verify it; when none does, the JWKS is re-fetched once (rate-limited by the cache) to pick
 * up a rotated key. Throws (rather than answering ok:false) only when no key could be loaded at all — our
 * problem, not the sender's.
 */
export async function verifyFalWebhook(
  headers: Record<string, string | string[] | undefined>,
  rawBody: Buffer,
  jwks: JwksCache,
  nowSec = Math.floor(Date.now() / 1000),
): Promise<{ ok: true; requestId: string; userId: string } | { ok: false; reason: string }> {
  const requestId = header(headers, WEBHOOK_HEADERS.requestId);
  const userId = header(headers, WEBHOOK_HEADERS.userId);
  const timestamp = header(headers, WEBHOOK_HEADERS.timestamp);
  const signature = header(headers, WEBHOOK_HEADERS.signature);
  const missing = Object.entries({ requestId, userId, timestamp, signature })
    .filter(([, v]) => !v)
    .map(([k]) => WEBHOOK_HEADERS[k as keyof typeof WEBHOOK_HEADERS]);
  if (!requestId || !userId || !timestamp || !signature) return { ok: false, reason: `missing header ${missing.join(', ')}` };
  if (!/^\d{1,12}$/.test(timestamp)) return { ok: false, reason: 'timestamp is not integer unix seconds' };
  if (Math.abs(nowSec - Number(timestamp)) > TIMESTAMP_TOLERANCE_SECONDS) {
    return { ok: false, reason: `stale timestamp (${timestamp}, now ${nowSec}, tolerance ±${TIMESTAMP_TOLERANCE_SECONDS}s)` };
  }
  // A malformed signature can never verify: don't let it trigger a JWKS refresh.
  if (!/^[0-9a-fA-F]{128}$/.test(signature)) return { ok: false, reason: 'signature is not 128 hex characters' };

  const fields: SignedFields = { requestId, userId, timestamp };
  const matches = (keys: KeyObject[]) => keys.some((k) => verifyWebhookSignature(fields, rawBody, signature, k));
  if (matches(await jwks.keys())) return { ok: true, requestId, userId };
  // No cached key verifies it: fal may have rotated its key.
  if (matches(await jwks.refresh())) return { ok: true, requestId, userId };
  return { ok: false, reason: "signature does not verify with any of fal's current keys" };
}
