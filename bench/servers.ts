// The benchmark's servers, each in a process of its own so that the service's processes can be
// measured alone: `node --import tsx bench/servers.ts emulator|s3`, options as JSON in
// BENCH_SERVER_OPTIONS. It reports its address over IPC ({url, ...}) and serves until SIGTERM.
//   emulator: EmulatorOptions (JSON) plus signingKeyPem (PKCS#8), so the bench can sign webhooks of its own
//   s3:       {dir} for s3rver
import { createPrivateKey, createPublicKey, randomUUID } from 'node:crypto';
import { startEmulator, type EmulatorOptions } from '../src/emulator/index.ts';
import type { SigningKey } from '../src/emulator/keys.ts';
import { startS3Server } from '../src/local/s3Server.ts';

const [, , kind] = process.argv;
const options = JSON.parse(process.env.BENCH_SERVER_OPTIONS ?? '{}') as Record<string, unknown>;

function signingKeyFrom(pem: string): SigningKey {
  const privateKey = createPrivateKey(pem);
  const publicKey = createPublicKey(privateKey);
  const { x } = publicKey.export({ format: 'jwk' });
  if (!x) throw new Error('not an ed25519 key');
  return { privateKey, publicKey, jwks: { keys: [{ kty: 'OKP', crv: 'Ed25519', x, kid: randomUUID(), use: 'sig', alg: 'EdDSA' }] } };
}

let close: () => Promise<void>;
if (kind === 'emulator') {
  const { signingKeyPem, ...rest } = options as EmulatorOptions & { signingKeyPem?: string };
  const emu = await startEmulator({ ...rest, signingKey: signingKeyPem ? signingKeyFrom(signingKeyPem) : undefined });
  close = () => emu.close();
  process.send?.({ url: emu.url, jwksUrl: emu.jwksUrl, port: emu.port });
} else if (kind === 's3') {
  const s3 = await startS3Server({ dir: String(options.dir) });
  close = () => s3.close();
  process.send?.({ url: s3.endpoint, port: s3.port });
} else {
  process.stderr.write('usage: servers.ts emulator|s3 (options as JSON in BENCH_SERVER_OPTIONS)\n');
  process.exit(2);
}

const stop = () => void close().finally(() => process.exit(0));
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
process.once('disconnect', stop);
