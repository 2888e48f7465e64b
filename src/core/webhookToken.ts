// The token in our webhook URLs. fal signs every customer's webhooks with the same keys, so a valid
// signature proves only that fal sent it, not that we asked for it; the URL's run/row/attempt are
// trusted only with an HMAC-SHA256 over them that only this deployment (WEBHOOK_SECRET) can mint.
import { createHmac, timingSafeEqual } from 'node:crypto';

/** The query parameter that carries the token, beside `run`, `row` and `attempt`. */
export const TOKEN_PARAM = 'token';

export interface WebhookTarget {
  runId: string;
  key: string;
  attempt: number;
}

function mac(secret: string, t: WebhookTarget): Buffer {
  // Newline-separated: run ids, row keys and attempts never contain one, so no two targets share a message.
  return createHmac('sha256', secret).update(`pb-webhook\n${t.runId}\n${t.key}\n${t.attempt}`).digest();
}

export function mintWebhookToken(secret: string, t: WebhookTarget): string {
  return mac(secret, t).toString('base64url');
}

/** Constant-time check of a token against the target it claims. */
export function webhookTokenValid(secret: string, t: WebhookTarget, token: string | undefined): boolean {
  if (!token || !/^[A-Za-z0-9_-]{43}$/.test(token)) return false;
  return timingSafeEqual(Buffer.from(token, 'base64url'), mac(secret, t));
}

/** The run/row/attempt a webhook URL names, when its token verifies; undefined otherwise. */
export function verifiedTarget(secret: string, query: Record<string, string>): WebhookTarget | undefined {
  const { run, row, attempt } = query;
  if (!run || !row || !attempt || !/^[1-9]\d{0,5}$/.test(attempt)) return undefined;
  const target = { runId: run, key: row, attempt: Number(attempt) };
  return webhookTokenValid(secret, target, query[TOKEN_PARAM]) ? target : undefined;
}
