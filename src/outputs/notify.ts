// The completion notice (NOTIFY_URL): when a run ends, its summary (the same object as summary.json,
// plus the event name and the delivery id) is POSTed, signed as Stripe signs its webhooks:
// `X-Portrait-Batch-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" under
// NOTIFY_SECRET>`. The time and the delivery id are inside what is signed, so a receiver refuses a
// stale copy (verifyNotice, 300 s by default) and drops a repeated delivery id. Sending is a BullMQ
// job, retried with backoff (policy.notify); a notice that never arrives is logged and never changes the run.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Queue, Worker, type Job } from 'bullmq';
import type { Context } from '../core/context.ts';
import { backoffDelay, jobOptions } from '../core/policy.ts';

export const NOTIFY_QUEUE = 'pb-notify';
export const SIGNATURE_HEADER = 'x-portrait-batch-signature';
/** The event every notice is today; in the body (`event`) and the X-Portrait-Batch-Event header. */
export const NOTICE_EVENT = 'run.ended';
/** How old a notice's `t` a receiver accepts by default (as Stripe's libraries do). */
export const NOTICE_TOLERANCE_SECONDS = 300;

export interface NoticeJob {
  runId: string;
  summary: Record<string, unknown>;
}

const hmac = (secret: string, t: number, body: string) => createHmac('sha256', secret).update(`${t}.${body}`).digest('hex');

/** `t=<unix seconds>,v1=<hex>`: v1 is HMAC-SHA256 of `${t}.${body}` under the secret. */
export function signNotice(secret: string, body: string, t = Math.floor(Date.now() / 1000)): string {
  return `t=${t},v1=${hmac(secret, t, body)}`;
}

export type NoticeVerdict = { ok: true; timestamp: number } | { ok: false; reason: string };

/**
 * What a receiver does with a notice: parse the header, recompute v1 over `${t}.${rawBody}` (any v1
 * may match, so a secret can be rotated by signing with both), compare in constant time, and refuse
 * a `t` further than toleranceSeconds from now. Pass the raw body bytes as received, not re-serialised JSON.
 */
export function verifyNotice(secret: string, header: string | undefined, rawBody: string | Buffer, opts: { toleranceSeconds?: number; now?: number } = {}): NoticeVerdict {
  if (!header) return { ok: false, reason: 'no X-Portrait-Batch-Signature header' };
  let t: number | undefined;
  const v1: string[] = [];
  for (const part of header.split(',')) {
    const [k, v] = part.split('=', 2).map((x) => x.trim());
    if (k === 't' && v && /^\d{1,12}$/.test(v)) t = Number(v);
    else if (k === 'v1' && v && /^[0-9a-f]{64}$/.test(v)) v1.push(v);
  }
  if (t === undefined) return { ok: false, reason: 'the signature header has no t=<unix seconds>' };
  if (!v1.length) return { ok: false, reason: 'the signature header has no v1=<hex>' };
  const expected = Buffer.from(hmac(secret, t, Buffer.isBuffer(rawBody) ? rawBody.toString('utf8') : rawBody), 'hex');
  if (!v1.some((v) => timingSafeEqual(Buffer.from(v, 'hex'), expected))) return { ok: false, reason: 'no v1 signature matches the body' };
  const tolerance = opts.toleranceSeconds ?? NOTICE_TOLERANCE_SECONDS;
  const age = Math.floor((opts.now ?? Date.now()) / 1000) - t;
  if (Math.abs(age) > tolerance) return { ok: false, reason: `the notice was signed ${age} s ago, outside the ${tolerance} s tolerance (a replay, or a clock off)` };
  return { ok: true, timestamp: t };
}

/** The notice's body: the run summary with the event and the delivery id (both signed with it). */
export function noticeBody(job: NoticeJob): string {
  return JSON.stringify({ event: NOTICE_EVENT, deliveryId: job.runId, ...job.summary });
}

/** Queues the notice of a run that ended; once per run (its job id), so a repeated finalize sends one. */
export async function enqueueRunNotice(ctx: Context, summary: { runId: string }): Promise<void> {
  if (!ctx.cfg.NOTIFY_URL) return;
  const queue = new Queue<NoticeJob>(NOTIFY_QUEUE, { connection: ctx.redis });
  try {
    const opts = jobOptions(ctx.policy.notify, 'notify', { age: ctx.policy.notify.keepFailedSeconds, count: 10_000 });
    await queue.add('notice', { runId: summary.runId, summary }, { jobId: `n~${summary.runId}`, ...opts });
  } finally {
    await queue.close();
  }
}

/** POSTs one notice; any answer but 2xx (or no answer) throws, and BullMQ tries again later. */
export async function sendNotice(ctx: Context, job: Job<NoticeJob>): Promise<number> {
  const url = ctx.cfg.NOTIFY_URL;
  const secret = ctx.cfg.NOTIFY_SECRET;
  if (!url || !secret) return 0;
  const body = noticeBody(job.data);
  const res = await fetch(url, {
    method: 'POST',
    body,
    redirect: 'error',
    signal: AbortSignal.timeout(ctx.policy.notify.timeoutMs),
    headers: {
      'content-type': 'application/json',
      'user-agent': 'portrait-batch',
      'x-portrait-batch-event': NOTICE_EVENT,
      'x-portrait-batch-delivery': job.data.runId,
      'x-portrait-batch-attempt': String(job.attemptsMade + 1),
      // Signed per attempt: a retry carries a fresh t, the same body and delivery id.
      [SIGNATURE_HEADER]: signNotice(secret, body),
    },
  });
  await res.body?.cancel().catch(() => undefined);
  if (!res.ok) throw new Error(`the notice receiver answered ${res.status}`);
  return res.status;
}

/** The worker that sends notices (in the worker role, when NOTIFY_URL is set). */
export function startNotifier(ctx: Context): Worker<NoticeJob> {
  const { policy } = ctx;
  const where = new URL(ctx.cfg.NOTIFY_URL!).origin;
  const worker = new Worker<NoticeJob>(NOTIFY_QUEUE, (job) => sendNotice(ctx, job), {
    connection: ctx.redis,
    concurrency: 4,
    lockDuration: policy.jobs.lockMs,
    stalledInterval: policy.jobs.stalledIntervalMs,
    settings: { backoffStrategy: (attemptsMade: number) => backoffDelay(policy.notify.backoff, attemptsMade) },
  });
  worker.on('completed', (job) => ctx.logger.info({ runId: job.data.runId, to: where, attempts: job.attemptsMade }, 'run notice delivered'));
  worker.on('failed', (job, err) => {
    const last = (job?.attemptsMade ?? 0) >= policy.notify.tries;
    ctx.logger[last ? 'error' : 'warn']({ runId: job?.data.runId, to: where, attempts: job?.attemptsMade, err: err.message }, last ? 'run notice not delivered: gave up' : 'run notice not delivered yet: will retry');
  });
  return worker;
}
