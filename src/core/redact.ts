// Secrets never reach a log line (defence in depth: nothing should log them in the first place).
// Known secret fields are censored by path (pino `redact`); every string that is logged — messages,
// error texts, URLs — is also scrubbed of presigned-URL signatures and of the literal values of the
// secret variables this process holds.

export const REDACTED = '[redacted]';

/** Fields censored wherever pino finds them (up to two levels deep). */
const SECRET_FIELDS = [
  'authorization',
  'Authorization',
  'cookie',
  'FAL_KEY',
  'falKey',
  'apiKey',
  'credentials',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'secretAccessKey',
  'sessionToken',
  'WEBHOOK_SECRET',
  'DASHBOARD_TOKEN',
  'token',
];
export const REDACT_PATHS = SECRET_FIELDS.flatMap((f) => [f, `*.${f}`, `*.*.${f}`]);

/** Query parameters of presigned S3 URLs (SigV4 and SigV2) that grant or identify access. */
const PRESIGN_PARAMS = /([?&](?:X-Amz-Signature|X-Amz-Credential|X-Amz-Security-Token|Signature|AWSAccessKeyId|x-amz-security-token)=)[^&#\s"']*/gi;
const AUTH_HEADER = /\b((?:Key|Bearer|AWS4-HMAC-SHA256)\s+)[^\s"',]{8,}/g;

/** Values of secret variables this process holds, scrubbed wherever they appear in a string. */
function secretValues(env: NodeJS.ProcessEnv = process.env): string[] {
  return ['FAL_KEY', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'DASHBOARD_TOKEN']
    .map((k) => env[k])
    .filter((v): v is string => typeof v === 'string' && v.length >= 8);
}

export function redactText(text: string, secrets = secretValues()): string {
  let out = text.replace(PRESIGN_PARAMS, `$1${REDACTED}`).replace(AUTH_HEADER, `$1${REDACTED}`);
  for (const s of secrets) if (out.includes(s)) out = out.split(s).join(REDACTED);
  return out;
}

/** A copy of `value` with every string scrubbed (bounded depth; errors become {type,message,stack}). */
export function redactValue(value: unknown, depth = 0, secrets = secretValues()): unknown {
  if (typeof value === 'string') return redactText(value, secrets);
  if (value === null || typeof value !== 'object' || depth > 6) return value;
  if (value instanceof Error) {
    return { type: value.name, message: redactText(value.message, secrets), stack: value.stack && redactText(value.stack, secrets) };
  }
  if (value instanceof URL) return redactText(value.href, secrets);
  if (Buffer.isBuffer(value)) return value;
  if (Array.isArray(value)) return value.map((v) => redactValue(v, depth + 1, secrets));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = redactValue(v, depth + 1, secrets);
  return out;
}
