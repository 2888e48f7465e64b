// Signed webhook delivery, fal's way: POST the result to the request's fal_webhook URL with the
// X-Fal-Webhook-* headers; re-deliver with exponential backoff while the receiver does not answer 2xx.
import type { KeyObject } from 'node:crypto';
import { signWebhook } from '../core/webhookSignature.ts';

export interface WebhookRetry {
  attempts: number;
  baseDelayMs: number;
  maxDelayMs: number;
}

export interface WebhookSender {
  /** Sends now and re-delivers on failure; resolves when delivered or given up. */
  deliver(url: string, requestId: string, body: unknown): Promise<boolean>;
  close(): void;
}

export function createWebhookSender(opts: {
  privateKey: KeyObject;
  userId: string;
  retry: WebhookRetry;
  onAttempt?: (ok: boolean) => void;
}): WebhookSender {
  const timers = new Set<NodeJS.Timeout>();
  let closed = false;
  const wait = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });
  const sendOnce = async (url: string, requestId: string, raw: Buffer): Promise<boolean> => {
    const timestamp = String(Math.floor(Date.now() / 1000));
    const signature = signWebhook({ requestId, userId: opts.userId, timestamp }, raw, opts.privateKey);
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'x-fal-webhook-request-id': requestId,
          'x-fal-webhook-user-id': opts.userId,
          'x-fal-webhook-timestamp': timestamp,
          'x-fal-webhook-signature': signature,
        },
        body: raw,
        signal: AbortSignal.timeout(15_000),
      });
      await res.arrayBuffer().catch(() => undefined);
      return res.ok;
    } catch {
      return false;
    }
  };
  return {
    async deliver(url, requestId, body) {
      const raw = Buffer.from(JSON.stringify(body));
      for (let attempt = 0; attempt < opts.retry.attempts && !closed; attempt++) {
        if (attempt > 0) await wait(Math.min(opts.retry.maxDelayMs, opts.retry.baseDelayMs * 2 ** (attempt - 1)));
        if (closed) break;
        const ok = await sendOnce(url, requestId, raw);
        opts.onAttempt?.(ok);
        if (ok) return true;
      }
      return false;
    },
    close() {
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
    },
  };
}
