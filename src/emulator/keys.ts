// The emulator's ED25519 signing key and its JWKS, like fal's /.well-known/jwks.json.
import { generateKeyPairSync, randomUUID, type KeyObject } from 'node:crypto';

export interface Jwk {
  kty: 'OKP';
  crv: 'Ed25519';
  /** base64url public key */
  x: string;
  kid: string;
  use: 'sig';
  alg: 'EdDSA';
}

export interface SigningKey {
  privateKey: KeyObject;
  publicKey: KeyObject;
  jwks: { keys: Jwk[] };
}

export function createSigningKey(): SigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const { x } = publicKey.export({ format: 'jwk' });
  if (!x) throw new Error('ed25519 key without x');
  return { privateKey, publicKey, jwks: { keys: [{ kty: 'OKP', crv: 'Ed25519', x, kid: randomUUID(), use: 'sig', alg: 'EdDSA' }] } };
}
