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

/** fal's request ids are UUIDs; anything printable up to this long is accepted (it becomes Redis keys). */
const MAX_REQUEST_ID_LENGTH = 256;

export type HeaderCheck = { ok: true; fields: SignedFields; signature: string } | { ok: false; reason: string };

/**
 * The signature headers, checked for presence and form only — cheap, before a byte of the body is read:
 * every header present, a printable request id, integer unix seconds within the tolerance, 128 hex
 * characters of signature. Passing proves nothing yet; the signature is checked over the body later.
 */
export function checkSignatureHeaders(headers: HeaderBag, nowSec = Math.floor(Date.now() / 1000)): HeaderCheck {
  const requestId = header(headers, WEBHOOK_HEADERS.requestId);
  const userId = header(headers, WEBHOOK_HEADERS.userId);
  const timestamp = header(headers, WEBHOOK_HEADERS.timestamp);
  const signature = header(headers, WEBHOOK_HEADERS.signature);
  const missing = Object.entries({ requestId, userId, timestamp, signature })
    .filter(([, v]) => !v)
    .map(([k]) => WEBHOOK_HEADERS[k as keyof typeof WEBHOOK_HEADERS]);
  if (!requestId || !userId || !timestamp || !signature) return { ok: false, reason: `missing header ${missing.join(', ')}` };
  if (requestId.length > MAX_REQUEST_ID_LENGTH || !/^[\x21-\x7e]+$/.test(requestId)) {
    return { ok: false, reason: `request id is not 1-${MAX_REQUEST_ID_LENGTH} printable ASCII characters` };
  }
  if (!/^\d{1,12}$/.test(timestamp)) return { ok: false, reason: 'timestamp is not integer unix seconds' };
  if (Math.abs(nowSec - Number(timestamp)) > TIMESTAMP_TOLERANCE_SECONDS) {
    return { ok: false, reason: `stale timestamp (${timestamp}, now ${nowSec}, tolerance ±${TIMESTAMP_TOLERANCE_SECONDS}s)` };
  }
  // A malformed signature can never verify: refuse it before reading the body or looking up any key.
  if (!/^[0-9a-fA-F]{128}$/.test(signature)) return { ok: false, reason: 'signature is not 128 hex characters' };
  return { ok: true, fields: { requestId, userId, timestamp }, signature };
}

/**
 * Verifies fal's webhook headers and signature over `rawBody`. The signature carries no key id, so any
 * current key may verify it; when none does, the JWKS is re-fetched once (rate-limited by the cache) to pick
 * up a rotated key. Throws (rather than answering ok:false) only when no key could be loaded at all — our
 * problem, not the sender's.
 */
export async function verifyFalWebhook(headers: HeaderBag, rawBody: Buffer, jwks: JwksCache, nowSec = Math.floor(Date.now() / 1000)): Promise<VerifyResult> {
  const checked = checkSignatureHeaders(headers, nowSec);
  if (!checked.ok) return checked;
  const { fields, signature } = checked;
  const ok = { ok: true, requestId: fields.requestId, userId: fields.userId } as const;
  const matches = (keys: KeyObject[]) => keys.some((k) => verifyWebhookSignature(fields, rawBody, signature, k));
  if (matches(await jwks.keys())) return ok;
  // No cached key verifies it: fal may have rotated its key.
  if (matches(await jwks.refresh())) return ok;
  return { ok: false, reason: "signature does not verify with any of fal's current keys" };
}
