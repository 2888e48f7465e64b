// Signed webhooks as fal would send them for any account: the emulator's signing key (handed to the
// emulator, so its JWKS publishes it) signs bodies a test chooses — a stranger's, or our own.
import { request } from 'node:http';
import { signWebhook, WEBHOOK_HEADERS } from '../../src/core/webhookSignature.ts';
import type { SigningKey } from '../../src/emulator/keys.ts';

export interface SignedWebhook {
  body: string | Buffer;
  requestId: string;
  userId?: string;
}

export function signedHeaders(key: SigningKey, w: SignedWebhook): Record<string, string> {
  const fields = { requestId: w.requestId, userId: w.userId ?? 'emulator-user', timestamp: String(Math.floor(Date.now() / 1000)) };
  return {
    'content-type': 'application/json',
    [WEBHOOK_HEADERS.requestId]: fields.requestId,
    [WEBHOOK_HEADERS.userId]: fields.userId,
    [WEBHOOK_HEADERS.timestamp]: fields.timestamp,
    [WEBHOOK_HEADERS.signature]: signWebhook(fields, Buffer.from(w.body), key.privateKey),
  };
}

/**
 * POSTs a signed webhook on a connection of its own (no keep-alive pool): a pooled connection the
 * receiver closes as idle (Node's 5 s keep-alive) while a large body is being built would reset the
 * POST, a race of the test's client, not of the receiver.
 */
export function postSigned(url: string, key: SigningKey, w: SignedWebhook, extraHeaders: Record<string, string> = {}): Promise<{ status: number; error?: string }> {
  const u = new URL(url);
  const body = Buffer.from(w.body);
  const headers = { ...signedHeaders(key, w), ...extraHeaders, 'content-length': String(body.length) };
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: `${u.pathname}${u.search}`, method: 'POST', headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        let json: { error?: string } = {};
        try {
          json = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error?: string };
        } catch {
          // not JSON: no reason to read
        }
        resolve({ status: res.statusCode ?? 0, error: json.error });
      });
    });
    req.on('error', (err) => reject(new Error(`POST ${u.origin}${u.pathname} failed: ${err.message}`)));
    req.end(body);
  });
}

/** fal's webhook body. */
export function falBody(requestId: string, status: 'OK' | 'ERROR', payload: unknown, error: string | null = null): string {
  return JSON.stringify({ request_id: requestId, gateway_request_id: requestId, status, payload, error });
}

/** A request whose headers are sent with only the first `sendBytes` of the body; resolves with the response (if any). */
export function partialRequest(url: string, headers: Record<string, string>, body: Buffer, sendBytes: number) {
  const u = new URL(url);
  const req = request({ host: u.hostname, port: u.port, path: `${u.pathname}${u.search}`, method: 'POST', headers: { ...headers, 'content-length': String(body.length) } });
  req.on('error', () => undefined);
  const response = new Promise<{ status: number; headers: Record<string, string | string[] | undefined> }>((resolve) => {
    req.on('response', (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, headers: res.headers });
    });
  });
  req.flushHeaders();
  req.write(body.subarray(0, sendBytes));
  return {
    response,
    finish: () => void req.end(body.subarray(sendBytes)),
    abort: () => req.destroy(),
  };
}

/** Resolves once `check` is true (checked every few ms): waits for an event of another process or server. */
export async function until(check: () => boolean | Promise<boolean>, what: string, limitMs = 10_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
