// The completion notice (NOTIFY_URL): when a run ends, its summary (the same object as summary.json) is
// POSTed, signed with HMAC-SHA256 under NOTIFY_SECRET. Sending is a BullMQ job, retried with backoff
// (policy.notify); a notice that never arrives is logged and never changes the run.
import { createHmac } from 'node:crypto';
import { Queue, Worker, type Job } from 'bullmq';
import type { Context } from '../core/context.ts';
import { backoffDelay, jobOptions } from '../core/policy.ts';

export const NOTIFY_QUEUE = 'pb-notify';
export const SIGNATURE_HEADER = 'x-portrait-batch-signature';

export interface NoticeJob {
  runId: string;
  summary: Record<string, unknown>;
}

/** `sha256=<hex>`: HMAC-SHA256 of the raw body under the secret (what a receiver recomputes). */
export function signNotice(secret: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
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
  const body = JSON.stringify(job.data.summary);
  const res = await fetch(url, {
    method: 'POST',
    body,
    redirect: 'error',
    signal: AbortSignal.timeout(ctx.policy.notify.timeoutMs),
    headers: {
      'content-type': 'application/json',
      'user-agent': 'portrait-batch',
      'x-portrait-batch-event': 'run.ended',
      'x-portrait-batch-delivery': job.data.runId,
      'x-portrait-batch-attempt': String(job.attemptsMade + 1),
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
