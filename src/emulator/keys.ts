// The emulator's ED25519 signing key and its JWKS, like fal's /.well-known/jwks.json.
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';

export interface SigningKey {
  privateKey: KeyObject;
  jwks: { keys: Record<string, unknown>[] };
}

export function createSigningKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const jwk = publicKey.export({ format: 'jwk' });
  return { privateKey, jwks: { keys: [{ ...jwk, kid: randomUUID(), use: 'sig', alg: 'EdDSA' }] } };
}
