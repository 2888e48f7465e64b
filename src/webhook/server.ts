// Starts the webhook role: the Express receiver, recording each verified result as a BullMQ job
// (durable in Redis) before answering 200 — but only a result it can place on a row of ours (see
// placeDelivery). Downloads happen later, in the result workers.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { requiredVar } from '../core/config.ts';
import type { Context } from '../core/context.ts';
import { DependencyError, outageOf } from '../core/dependencies.ts';
import { resultJobOptions, type ResultJob } from '../core/queues.ts';
import { redisRestarts } from '../core/redisRestarts.ts';
import { addResultJob, INLINE_PAYLOAD_MAX_BYTES } from '../core/resultJobs.ts';
import type { RowStore } from '../core/rowState.ts';
import { verifiedTarget, type WebhookTarget } from '../core/webhookToken.ts';
import { createWebhookApp, type WebhookDelivery } from './app.ts';
import { JwksCache } from './jwks.ts';
import { newWebhookCounters, WebhookRefused, type WebhookCounters } from './refusals.ts';
import { ResultBatcher } from './resultBatch.ts';

export interface RunningWebhook {
  server: Server;
  port: number;
  /** Received, recorded and refused (by reason) since start. */
  counters: WebhookCounters;
  close(): Promise<void>;
}

/** Where a verified webhook belongs: its URL's run/row/attempt when the token verifies (`hint`), or the row its request id was recorded for. */
export type Placement = { runId: string; hint?: WebhookTarget };

/**
 * Places a verified webhook on a row of ours, or refuses it. fal signs every customer's webhooks with
 * the same keys, so the signature says only that fal sent it: the URL may name the row only with a token
 * we minted for exactly that run/row/attempt; otherwise only a request id we recorded at submit places it.
 */
export async function placeDelivery(d: WebhookDelivery, secret: string, rows: Pick<RowStore, 'lookupRequest'>): Promise<Placement> {
  const hint = verifiedTarget(secret, d.query);
  if (hint) return { runId: hint.runId, hint };
  const mapped = await rows.lookupRequest(d.requestId);
  if (mapped) return { runId: mapped.runId };
  const why = d.query.run || d.query.row ? 'its URL token does not verify' : 'its URL names no row';
  throw new WebhookRefused(403, 'unplaceable', `webhook for request ${d.requestId} is not ours: ${why} and no submission of ours has that request id`);
}

export function resultJobFrom(d: WebhookDelivery, hint: WebhookTarget | undefined): ResultJob {
  return {
    requestId: d.requestId,
    status: d.body.status,
    payload: d.body.payload,
    error: d.body.error ?? null,
    hint: hint ? { runId: hint.runId, key: hint.key, attempt: hint.attempt } : undefined,
    source: 'webhook',
    receivedAt: d.receivedAt,
  };
}

/** Most result jobs a receiver remembers to record again after a Redis restart. */
const RECENT_RESULTS_MAX = 10_000;

/**
 * The result jobs this receiver recorded in the moments before Redis went away. fal was answered 200
 * for them and will not deliver them again, so after a Redis restart that may have lost them they are
 * recorded again (a job that survived absorbs its copy by job id). See src/core/redisRestarts.ts.
 */
function recentResults(ctx: Context): { push(runId: string, job: ResultJob): void } {
  const restarts = redisRestarts(ctx);
  const kept: { at: number; runId: string; job: ResultJob }[] = [];
  restarts.onRestart(async () => {
    const since = Date.now() - ctx.policy.redisRestart.rememberMs;
    for (const r of kept.filter((k) => k.at >= since)) await addResultJob(ctx, r.runId, r.job);
  });
  return {
    push(runId, job) {
      kept.push({ at: Date.now(), runId, job });
      const oldest = Date.now() - ctx.policy.redisRestart.rememberMs;
      let drop = 0;
      while (drop < kept.length && (kept[drop]!.at < oldest || kept.length - drop > RECENT_RESULTS_MAX)) drop++;
      if (drop) kept.splice(0, drop);
    },
  };
}

export async function startWebhookServer(ctx: Context, port = ctx.cfg.WEBHOOK_PORT, host = '0.0.0.0'): Promise<RunningWebhook> {
  const secret = requiredVar(ctx.cfg, 'WEBHOOK_SECRET', 'webhook');
  const counters = newWebhookCounters();
  ctx.metrics.trackWebhook(counters);
  // Results that arrive together share one Redis round trip (see resultBatch.ts).
  const batcher = new ResultBatcher((jobs) => ctx.queues.results.addBulk(jobs), { onBatch: () => void counters.batches++ });
  const recent = recentResults(ctx);
  const record = async (runId: string, job: ResultJob) => {
    const payloadJson = job.payload === undefined ? undefined : JSON.stringify(job.payload);
    // A payload too large for Redis is staged in S3 first (rare: sync_mode images inline), one by one.
    if (payloadJson !== undefined && Buffer.byteLength(payloadJson) > INLINE_PAYLOAD_MAX_BYTES) await addResultJob(ctx, runId, job, payloadJson);
    else await batcher.add({ name: 'result', data: job, opts: resultJobOptions(ctx.policy, job.requestId, job.status) });
    recent.push(runId, job);
  };
  const app = createWebhookApp({
    jwks: new JwksCache(ctx.cfg.FAL_JWKS_URL),
    maxBodyBytes: ctx.cfg.WEBHOOK_MAX_BODY_BYTES,
    logger: ctx.logger,
    falUserId: ctx.cfg.FAL_USER_ID,
    counters,
    isReady: async () => (await ctx.redis.ping()) === 'PONG',
    onRecordFailure: (err, requestId) => {
      // Redis (or S3, for a staged payload) down: said once by the tracker; fal delivers again.
      const dep = outageOf(err);
      if (dep) ctx.dependencies.down(dep, err instanceof DependencyError ? err.cause : err);
      else ctx.dependencies.error('could not record webhook; fal will re-deliver', err, { requestId });
    },
    record: async (d) => {
      const placed = await placeDelivery(d, secret, ctx.rows);
      await record(placed.runId, resultJobFrom(d, placed.hint));
    },
  });
  const server = await new Promise<Server>((resolve, reject) => {
    // Express 5 hands a listen error (a port in use) to this callback instead of throwing it.
    const s = app.listen(port, host, (err?: Error) => (err ? reject(err) : resolve(s)));
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    counters,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections(); // a kept-alive idle connection must not hold shutdown up
      }),
  };
}
