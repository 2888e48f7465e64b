import { TIMESTAMP_TOLERANCE_SECONDS, WEBHOOK_HEADERS, verifyWebhookSignature } from '../core/webhookSignature.ts';
import type { JwksCache } from './jwks.ts';

export type VerifyResult = { ok: true; requestId: string; userId: string } | { ok: false; reason: string };

type Headers = Record<string, string | string[] | undefined>;
const one = (h: Headers, name: string) => {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
};

/** Checks a fal webhook's headers and ED25519 signature over the raw body, before anything trusts it. */
export async function verifyFalWebhook(headers: Headers, rawBody: Buffer, jwks: JwksCache, nowSec = Math.floor(Date.now() / 1000)): Promise<VerifyResult> {
  const requestId = one(headers, WEBHOOK_HEADERS.requestId);
  const userId = one(headers, WEBHOOK_HEADERS.userId);
  const timestamp = one(headers, WEBHOOK_HEADERS.timestamp);
  const signature = one(headers, WEBHOOK_HEADERS.signature);
  if (!requestId || !userId || !timestamp || !signature) return { ok: false, reason: 'missing X-Fal-Webhook-* headers' };
  if (!/^\d{1,12}$/.test(timestamp)) return { ok: false, reason: 'timestamp is not unix seconds' };
  if (Math.abs(nowSec - Number(timestamp)) > TIMESTAMP_TOLERANCE_SECONDS) return { ok: false, reason: `stale timestamp ${timestamp}` };
  const fields = { requestId, userId, timestamp };
  const matches = (keys: Awaited<ReturnType<JwksCache['keys']>>) => keys.some((k) => verifyWebhookSignature(fields, rawBody, signature, k));
  if (matches(await jwks.keys())) return { ok: true, requestId, userId };
  // No cached key verifies it: fal may have rotated its key.
  if (matches(await jwks.refresh())) return { ok: true, requestId, userId };
  return { ok: false, reason: 'signature does not verify' };
}
