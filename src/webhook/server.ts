// Starts the webhook role: the Express receiver, recording each verified result as a BullMQ job
// (durable in Redis) before answering 200. Downloads happen later, in the result workers.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Context } from '../core/context.ts';
import { resultJobOptions, type ResultJob } from '../core/queues.ts';
import { createWebhookApp, type WebhookDelivery } from './app.ts';
import { JwksCache } from './jwks.ts';

export interface RunningWebhook {
  server: Server;
  port: number;
  close(): Promise<void>;
}

export function resultJobFrom(d: WebhookDelivery): ResultJob {
  const attempt = Number(d.query.attempt);
  return {
    requestId: d.requestId,
    status: d.body.status,
    payload: d.body.payload,
    error: d.body.error ?? null,
    hint: d.query.run && d.query.row && Number.isInteger(attempt) ? { runId: d.query.run, key: d.query.row, attempt } : undefined,
    source: 'webhook',
    receivedAt: d.receivedAt,
  };
}

export async function startWebhookServer(ctx: Context, port = ctx.cfg.WEBHOOK_PORT, host = '0.0.0.0'): Promise<RunningWebhook> {
  const app = createWebhookApp({
    jwks: new JwksCache(ctx.cfg.FAL_JWKS_URL),
    maxBodyBytes: ctx.cfg.WEBHOOK_MAX_BODY_BYTES,
    logger: ctx.logger,
    isReady: async () => (await ctx.redis.ping()) === 'PONG',
    record: async (d) => {
      const job = resultJobFrom(d);
      await ctx.queues.results.add('result', job, resultJobOptions(ctx.policy, job.requestId, job.status));
    },
  });
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(port, host, () => resolve(s));
    s.once('error', reject);
  });
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
