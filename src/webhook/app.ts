// The webhook receiver: verify fal's signature over the raw bytes, then parse, then record the result
// durably (a BullMQ job) and only then answer 200. Refused requests store nothing.
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from '../core/logger.ts';
import { WEBHOOK_HEADERS } from '../core/webhookSignature.ts';
import type { JwksCache } from './jwks.ts';
import { verifyFalWebhook } from './verify.ts';

export interface FalWebhookBody {
  request_id: string;
  gateway_request_id?: string;
  status: 'OK' | 'ERROR';
  payload?: unknown;
  error?: string | null;
}

export interface WebhookDelivery {
  requestId: string;
  userId: string;
  body: FalWebhookBody;
  query: Record<string, string>;
  receivedAt: number;
}

export interface WebhookAppOptions {
  jwks: JwksCache;
  maxBodyBytes: number;
  record: (d: WebhookDelivery) => Promise<void>;
  logger: Logger;
  isReady?: () => Promise<boolean>;
}

export function createWebhookApp(opts: WebhookAppOptions): express.Express {
  const app = express();
  app.disable('x-powered-by');
  const refuse = (res: Response, status: number, error: string, req: Request) => {
    opts.logger.warn({ status, error, requestId: req.header(WEBHOOK_HEADERS.requestId) }, 'webhook refused');
    res.status(status).json({ error });
  };

  app.post('/fal/webhook', (req, res, next) => {
    // Refuse before reading when the announced body is already too large.
    if (Number(req.header('content-length') ?? 0) > opts.maxBodyBytes) return refuse(res, 413, 'body too large', req);
    next();
  });
  app.post('/fal/webhook', express.raw({ type: () => true, limit: opts.maxBodyBytes }), async (req, res) => {
    const raw = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const verdict = await verifyFalWebhook(req.headers, raw, opts.jwks).catch((err: Error) => ({ ok: false as const, reason: err.message }));
    if (!verdict.ok) return refuse(res, 401, verdict.reason, req);
    let body: FalWebhookBody;
    try {
      body = JSON.parse(raw.toString('utf8')) as FalWebhookBody;
    } catch {
      return refuse(res, 400, 'body is not JSON', req);
    }
    if (!body || typeof body !== 'object' || typeof body.request_id !== 'string' || (body.status !== 'OK' && body.status !== 'ERROR')) {
      return refuse(res, 400, 'body is not a fal webhook (request_id, status OK|ERROR)', req);
    }
    if (body.request_id !== verdict.requestId) return refuse(res, 401, 'request id in the header and the body differ', req);
    const query = Object.fromEntries(Object.entries(req.query).filter((e): e is [string, string] => typeof e[1] === 'string'));
    try {
      await opts.record({ requestId: verdict.requestId, userId: verdict.userId, body, query, receivedAt: Date.now() });
    } catch (err) {
      opts.logger.error({ requestId: verdict.requestId, err: (err as Error).message }, 'could not record webhook; fal will re-deliver');
      return void res.status(503).json({ error: 'could not record the result, retry later' });
    }
    res.status(200).json({ ok: true });
  });

  app.get('/healthz', async (_req, res) => {
    const ready = opts.isReady ? await opts.isReady().catch(() => false) : true;
    res.status(ready ? 200 : 503).json({ ok: ready });
  });
  app.use((_req, res) => void res.status(404).json({ error: 'not found' }));
  // body-parser errors (too large, aborted) as JSON, never HTML.
  app.use((err: { status?: number; type?: string; message?: string }, req: Request, res: Response, _next: NextFunction) => {
    const status = err.type === 'entity.too.large' ? 413 : (err.status ?? 500);
    if (status >= 500) opts.logger.error({ err: err.message }, 'webhook error');
    refuse(res, status, status === 413 ? 'body too large' : (err.message ?? 'error'), req);
  });
  return app;
}
