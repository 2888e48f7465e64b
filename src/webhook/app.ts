// The webhook receiver: verify fal's signature over the raw bytes, then parse, then record the result
// durably (a BullMQ job, see server.ts) and only then answer 200. Refused requests record nothing, and
// nothing slow (downloads) ever happens inside the request.
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { parseJsonExactSeeds } from '../core/exactJson.ts';
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

/** How long /healthz waits for isReady() before answering 503. */
const READY_TIMEOUT_MS = 2_000;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The fal webhook body, or why it is not one. Unknown fields are dropped; an odd `error` becomes a string. */
export function parseFalWebhookBody(raw: Buffer): FalWebhookBody | { invalid: string } {
  let json: unknown;
  try {
    json = parseJsonExactSeeds(raw.toString('utf8')); // 64-bit seeds kept exact, as strings
  } catch {
    return { invalid: 'body is not JSON' };
  }
  if (!isObject(json)) return { invalid: 'body is not a JSON object' };
  if (typeof json.request_id !== 'string' || !json.request_id) return { invalid: 'body has no string request_id' };
  if (json.status !== 'OK' && json.status !== 'ERROR') return { invalid: 'body status is not OK or ERROR' };
  const body: FalWebhookBody = { request_id: json.request_id, status: json.status, payload: json.payload };
  if (typeof json.gateway_request_id === 'string') body.gateway_request_id = json.gateway_request_id;
  if (json.error === undefined || json.error === null || typeof json.error === 'string') body.error = json.error ?? null;
  else body.error = JSON.stringify(json.error);
  return body;
}

/** Our own query string (?run=…&row=…&attempt=…), exactly as it came, first value of a repeated name. */
function queryOf(req: Request): Record<string, string> {
  const q = req.originalUrl.indexOf('?');
  const query: Record<string, string> = {};
  if (q < 0) return query;
  for (const [k, v] of new URLSearchParams(req.originalUrl.slice(q + 1))) if (!(k in query)) query[k] = v;
  return query;
}

export function createWebhookApp(opts: WebhookAppOptions): express.Express {
  const { logger, jwks, maxBodyBytes } = opts;
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');

  const refuse = (req: Request, res: Response, status: number, reason: string) => {
    logger.warn({ status, reason, requestId: req.get(WEBHOOK_HEADERS.requestId), path: req.path }, 'webhook refused');
    res.status(status).json({ error: reason });
  };

  // Refuse before reading a byte when the announced body is already too large.
  const announcedSize: RequestHandler = (req, res, next) => {
    const length = Number(req.get('content-length') ?? 0);
    if (length > maxBodyBytes) return refuse(req, res, 413, `body too large (${length} > ${maxBodyBytes} bytes)`);
    next();
  };

  const receive: RequestHandler = async (req, res) => {
    const raw: Buffer = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    // 1. The signature over the exact bytes received, before parsing anything.
    let verdict: Awaited<ReturnType<typeof verifyFalWebhook>>;
    try {
      verdict = await verifyFalWebhook(req.headers, raw, jwks);
    } catch (err) {
      // No key could be loaded: we cannot tell, so fal should try again later.
      logger.error({ err: (err as Error).message, requestId: req.get(WEBHOOK_HEADERS.requestId) }, 'cannot verify webhooks: no signing keys');
      return void res.status(503).json({ error: 'cannot verify signatures right now, retry later' });
    }
    if (!verdict.ok) return refuse(req, res, 401, verdict.reason);
    // 2. Only now parse it.
    const body = parseFalWebhookBody(raw);
    if ('invalid' in body) return refuse(req, res, 400, body.invalid);
    // The signed header names the request; the body must be about the same one.
    if (body.request_id !== verdict.requestId) return refuse(req, res, 401, 'request id in the header and the body differ');
    // 3. Durable record, then 200. A failure answers 503 so fal delivers again.
    const delivery: WebhookDelivery = { requestId: verdict.requestId, userId: verdict.userId, body, query: queryOf(req), receivedAt: Date.now() };
    try {
      await opts.record(delivery);
    } catch (err) {
      logger.error({ requestId: verdict.requestId, err: (err as Error).message }, 'could not record webhook; fal will re-deliver');
      return void res.status(503).json({ error: 'could not record the result, retry later' });
    }
    logger.debug({ requestId: verdict.requestId, status: body.status, query: delivery.query }, 'webhook recorded');
    res.status(200).json({ ok: true });
  };

  app.post('/fal/webhook', announcedSize, express.raw({ type: () => true, limit: maxBodyBytes }), receive);

  app.get('/healthz', async (_req, res) => {
    let ready = true;
    if (opts.isReady) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const timeout = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), READY_TIMEOUT_MS);
      });
      ready = await Promise.race([opts.isReady().catch(() => false), timeout]);
      clearTimeout(timer);
    }
    res.status(ready ? 200 : 503).json({ ok: ready });
  });

  app.use((_req, res) => void res.status(404).json({ error: 'not found' }));

  // Errors (body-parser: too large, aborted, bad encoding; anything thrown) as JSON, never express's HTML page.
  app.use((err: unknown, req: Request, res: Response, next: NextFunction) => {
    if (res.headersSent) return next(err);
    const e = isObject(err) ? err : {};
    const status = e.type === 'entity.too.large' ? 413 : typeof e.status === 'number' && e.status >= 400 && e.status < 500 ? e.status : 500;
    if (status === 500) {
      logger.error({ err: err instanceof Error ? err.message : String(err), path: req.path }, 'webhook receiver error');
      return void res.status(500).json({ error: 'internal error' });
    }
    const message = status === 413 ? `body too large (limit ${maxBodyBytes} bytes)` : typeof e.message === 'string' ? e.message : 'bad request';
    refuse(req, res, status, message);
  });
  return app;
}
