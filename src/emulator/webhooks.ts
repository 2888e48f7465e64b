// Signed webhook delivery, fal's way: POST the result to the request's fal_webhook URL (query kept
// intact) with the X-Fal-Webhook-* headers, signed with signWebhook; re-deliver with exponential
// backoff while the receiver does not answer 2xx, each attempt with a fresh timestamp and signature.
// The schedule is fal's ("10 times in the span of 2 hours"); `timeScale` shrinks it for tests. A
// payload larger than `maxPayloadBytes` is sent as `payload: null` with a `payload_error`, as fal does.
// The webhook faults (drop, duplicate, delay) are applied here.
import type { KeyObject } from 'node:crypto';
import { stringifyJson } from '../core/exactJson.ts';
import type { Logger } from '../core/logger.ts';
import { signWebhook, WEBHOOK_HEADERS } from '../core/webhookSignature.ts';
import { between, chance, type EmulatorFaults } from './faults.ts';
import type { EmulatorStats } from './stats.ts';

export interface WebhookRetry {
  /** Delivery attempts per webhook, the first included. */
  attempts: number;
  /** Delay before the 2nd attempt; doubles after each failure. */
  baseDelayMs: number;
  /** Cap on the delay between attempts. */
  maxDelayMs: number;
}

/**
 * fal: "it will retry 10 times in the span of 2 hours". Doubling from 14 s gives 14 s, 28 s, … 3584 s
 * between the 10 attempts: 7154 s (1 h 59 min) from the first to the last.
 */
export const DEFAULT_WEBHOOK_RETRY: WebhookRetry = { attempts: 10, baseDelayMs: 14_000, maxDelayMs: 3_600_000 };

/** fal's webhook body. */
export interface WebhookBody {
  request_id: string;
  gateway_request_id: string;
  status: 'OK' | 'ERROR';
  payload: unknown;
  /** Only when the payload could not be included (too large): then `payload` is null. */
  payload_error?: string;
  error: string | null;
}

export interface WebhookAttempt {
  /** Which copy (1, or 2 for a duplicate). */
  copy: number;
  attempt: number;
  at: string;
  /** The receiver's HTTP status, when it answered. */
  status?: number;
  error?: string;
}

/** What delivery needs to know about a request. */
export interface WebhookTarget {
  id: string;
  webhookUrl?: string;
  webhookAttempts: WebhookAttempt[];
}

export interface WebhookSenderOptions {
  privateKey: KeyObject;
  userId: string;
  retry: WebhookRetry;
  stats: EmulatorStats;
  random: () => number;
  faults: () => EmulatorFaults;
  logger?: Logger;
  /** Per-attempt timeout. */
  timeoutMs?: number;
  /** Multiplies every retry delay (tests: 0.001 turns fal's 2 hours into 7 s). */
  timeScale: number;
  /** Largest JSON payload sent in a webhook; larger ones become payload null + payload_error. */
  maxPayloadBytes: number;
  /** Why fal could not post to this URL (privateNetwork: false), or undefined. */
  refuse?: (url: string) => Promise<string | undefined>;
}

export function backoffDelay(retry: WebhookRetry, failedAttempts: number): number {
  return Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** Math.max(0, failedAttempts - 1));
}

/** The body as sent: the payload replaced by a payload_error when it is larger than `maxBytes`. */
export function webhookRaw(body: WebhookBody, maxBytes: number): { raw: Buffer; payloadError: boolean } {
  const payloadBytes = Buffer.byteLength(stringifyJson(body.payload ?? null));
  if (payloadBytes <= maxBytes) return { raw: Buffer.from(stringifyJson(body)), payloadError: false };
  // The wording is ours: fal documents only that payload is null and payload_error says why.
  const payload_error = `Payload too large for the webhook (${payloadBytes} bytes, limit ${maxBytes}); fetch the result with the queue API.`;
  return { raw: Buffer.from(stringifyJson({ ...body, payload: null, payload_error })), payloadError: true };
}

export class WebhookSender {
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly aborter = new AbortController();
  private closed = false;

  constructor(private readonly opts: WebhookSenderOptions) {}

  /** Sends a finished request's webhook in the background, faults applied. */
  dispatch(target: WebhookTarget, body: WebhookBody): void {
    const url = target.webhookUrl;
    if (!url || this.closed) return;
    const { stats, random } = this.opts;
    const faults = this.opts.faults();
    if (chance(random, faults.webhookDropRate)) {
      stats.webhooksDropped++;
      this.opts.logger?.debug({ requestId: target.id }, 'emulator: webhook dropped (fault)');
      return;
    }
    const copies = chance(random, faults.webhookDuplicateRate) ? 2 : 1;
    if (copies === 2) stats.webhooksDuplicated++;
    const delay = between(random, faults.webhookDelayMs);
    const { raw, payloadError } = webhookRaw(body, this.opts.maxPayloadBytes);
    if (payloadError) stats.webhookPayloadErrors++;
    for (let copy = 1; copy <= copies; copy++) {
      void this.wait(delay + (copy - 1) * 50).then(async () => {
        if (this.closed) return;
        stats.webhooksSent++;
        if (await this.deliver(url, target, raw, copy)) stats.webhooksDelivered++;
      });
    }
  }

  /** One webhook with its re-deliveries; true once the receiver answered 2xx. */
  async deliver(url: string, target: WebhookTarget, raw: Buffer, copy = 1): Promise<boolean> {
    const { retry } = this.opts;
    for (let attempt = 1; attempt <= Math.max(1, retry.attempts) && !this.closed; attempt++) {
      if (attempt > 1) await this.wait(backoffDelay(retry, attempt - 1) * this.opts.timeScale);
      if (this.closed) break;
      const record: WebhookAttempt = { copy, attempt, at: new Date().toISOString() };
      target.webhookAttempts.push(record);
      this.opts.stats.webhookAttempts++;
      const outcome = await this.post(url, target.id, raw);
      Object.assign(record, outcome);
      if (outcome.status !== undefined && outcome.status >= 200 && outcome.status < 300) return true;
      this.opts.logger?.debug({ requestId: target.id, attempt, ...outcome }, 'emulator: webhook not acknowledged');
    }
    if (!this.closed) this.opts.logger?.warn({ requestId: target.id }, 'emulator: webhook given up');
    return false;
  }

  close(): void {
    this.closed = true;
    this.aborter.abort();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private async post(url: string, requestId: string, raw: Buffer): Promise<{ status?: number; error?: string }> {
    const refused = await this.opts.refuse?.(url);
    if (refused) return { error: `fal cannot reach the webhook URL: ${refused}` };
    const timestamp = String(Math.floor(Date.now() / 1000));
    const userId = this.opts.userId;
    const signature = signWebhook({ requestId, userId, timestamp }, raw, this.opts.privateKey);
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          [WEBHOOK_HEADERS.requestId]: requestId,
          [WEBHOOK_HEADERS.userId]: userId,
          [WEBHOOK_HEADERS.timestamp]: timestamp,
          [WEBHOOK_HEADERS.signature]: signature,
        },
        body: raw,
        redirect: 'manual',
        signal: AbortSignal.any([this.aborter.signal, AbortSignal.timeout(this.opts.timeoutMs ?? 15_000)]),
      });
      await res.arrayBuffer().catch(() => undefined);
      return { status: res.status };
    } catch (err) {
      const code = (err as { cause?: { code?: string } }).cause?.code;
      return { error: code ?? (err as Error).message };
    }
  }

  private wait(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }
}
