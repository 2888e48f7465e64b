// fal's webhook signature scheme, shared by the receiver (verify) and the emulator (sign).
// fal signs `request_id \n user_id \n timestamp \n sha256_hex(raw body)` with ED25519; the
// signature travels hex-encoded, public keys are published as a JWKS of OKP/Ed25519 keys.
import { createHash, sign, verify, type KeyObject } from 'node:crypto';

export const WEBHOOK_HEADERS = {
  requestId: 'x-fal-webhook-request-id',
  userId: 'x-fal-webhook-user-id',
  timestamp: 'x-fal-webhook-timestamp',
  signature: 'x-fal-webhook-signature',
} as const;

/** Seconds a webhook timestamp may be away from our clock (fal's documented tolerance). */
export const TIMESTAMP_TOLERANCE_SECONDS = 300;

export interface SignedFields {
  requestId: string;
  userId: string;
  /** Unix seconds, as a decimal string exactly as sent in the header. */
  timestamp: string;
}

export function signatureMessage(fields: SignedFields, rawBody: Buffer): Buffer {
  const bodyHash = createHash('sha256').update(rawBody).digest('hex');
  return Buffer.from([fields.requestId, fields.userId, fields.timestamp, bodyHash].join('\n'), 'utf8');
}

export function signWebhook(fields: SignedFields, rawBody: Buffer, privateKey: KeyObject): string {
  return sign(null, signatureMessage(fields, rawBody), privateKey).toString('hex');
}

export function verifyWebhookSignature(
  fields: SignedFields,
  rawBody: Buffer,
  signatureHex: string,
  publicKey: KeyObject,
): boolean {
  if (!/^[0-9a-fA-F]{128}$/.test(signatureHex)) return false;
  return verify(null, signatureMessage(fields, rawBody), publicKey, Buffer.from(signatureHex, 'hex'));
}
