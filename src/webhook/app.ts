// The webhook receiver. Cheap checks first, before a byte of the body is read (signature headers
// present and well-formed, the pinned fal user, no Content-Encoding, announced size, a free body-read
// slot); then the raw bytes, never inflated; then fal's signature over them; then parse; then record
// the result durably (a BullMQ job, see server.ts, which also refuses webhooks it cannot place) and
// only then answer 200. Refused requests record nothing, and nothing slow (downloads) ever happens
// inside the request.
import express, { type NextFunction, type Request, type RequestHandler, type Response } from 'express';
import { parseJsonExactSeeds } from '../core/exactJson.ts';
import type { Logger } from '../core/logger.ts';
import { TOKEN_PARAM } from '../core/webhookToken.ts';
import { WEBHOOK_HEADERS } from '../core/webhookSignature.ts';
import { BodyReadSlots, jsonNestsDeeperThan, readRawBody } from './body.ts';
import type { JwksCache } from './jwks.ts';
import { newWebhookCounters, WebhookRefused, type RefusalCode, type WebhookCounters } from './refusals.ts';
import { checkSignatureHeaders, verifyFalWebhook } from './verify.ts';

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
  /** Stores a verified webhook durably; throws WebhookRefused for one that must not be stored. */
  record: (d: WebhookDelivery) => Promise<void>;
  logger: Logger;
  /**
   * A verified webhook could not be recorded (fal delivers it again): says so. Default: one error line
   * each; the receiver passes the dependency tracker's, so a Redis outage is one line, not one per webhook.
   */
  onRecordFailure?: (err: unknown, requestId: string) => void;
  isReady?: () => Promise<boolean>;
  /** When set, webhooks signed for any other fal user are refused (FAL_USER_ID). */
  falUserId?: string;
  /** Bodies read at once; more get 503 with Retry-After. Default 8. */
  maxConcurrentBodyReads?: number;
  /** A body must arrive within this long once its headers have. Default 60 s. */
  bodyTimeoutMs?: number;
  /** Counts of what was received, recorded and refused (by reason), for metrics. */
  counters?: WebhookCounters;
}

/** How long /healthz waits for isReady() before answering 503. */
const READY_TIMEOUT_MS = 2_000;
/** fal's bodies nest a few levels; thousands of levels cannot be stored (JSON.stringify overflows the stack). */
export const MAX_JSON_DEPTH = 32;
/** The answer to a recorded webhook. */
const OK_BODY = Buffer.from(JSON.stringify({ ok: true }));
const OK_HEADERS = { 'content-type': 'application/json; charset=utf-8', 'content-length': String(OK_BODY.length) };
/** Seconds fal is asked to wait when every body-read slot is taken. */
const BUSY_RETRY_AFTER_SECONDS = 5;

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
  const counters = opts.counters ?? newWebhookCounters();
  const slots = new BodyReadSlots(opts.maxConcurrentBodyReads ?? 8);
  const bodyTimeoutMs = opts.bodyTimeoutMs ?? 60_000;
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');

  const refuse = (req: Request, res: Response, status: number, code: RefusalCode, reason: string) => {
    counters.refused[code]++;
    logger.warn({ status, code, reason, requestId: req.get(WEBHOOK_HEADERS.requestId), path: req.path }, 'webhook refused');
    // A body not read (fully) is drained and discarded by Node after the answer, never held.
    res.status(status).json({ error: reason });
  };

  const receive: RequestHandler = async (req, res) => {
    counters.received++;
    // 1. What the headers alone can refuse, before reading a byte of the body.
    const headers = checkSignatureHeaders(req.headers);
    if (!headers.ok) return refuse(req, res, 401, 'headers', headers.reason);
    if (opts.falUserId !== undefined && headers.fields.userId !== opts.falUserId) {
      return refuse(req, res, 403, 'user', `webhook is for fal user ${headers.fields.userId}, not FAL_USER_ID`);
    }
    const encoding = (req.get('content-encoding') ?? 'identity').trim().toLowerCase();
    if (encoding !== 'identity') return refuse(req, res, 415, 'encoding', `content-encoding ${encoding} is not accepted (send the body uncompressed)`);
    const length = Number(req.get('content-length') ?? 0);
    if (length > maxBodyBytes) return refuse(req, res, 413, 'too_large', `body too large (${length} > ${maxBodyBytes} bytes)`);
    if (!slots.tryAcquire()) {
      res.setHeader('retry-after', String(BUSY_RETRY_AFTER_SECONDS));
      return refuse(req, res, 503, 'busy', 'too many webhooks being received at once, retry later');
    }
    // 2. The exact bytes, never inflated, within the limit.
    let body: Awaited<ReturnType<typeof readRawBody>>;
    try {
      body = await readRawBody(req, maxBodyBytes, bodyTimeoutMs);
    } finally {
      slots.release();
    }
    if (!body.ok) return refuse(req, res, body.status, body.status === 413 ? 'too_large' : 'body', body.reason);
    const raw = body.raw;
    // 3. The signature over those bytes, before parsing anything.
    let verdict: Awaited<ReturnType<typeof verifyFalWebhook>>;
    try {
      verdict = await verifyFalWebhook(req.headers, raw, jwks);
    } catch (err) {
      // No key could be loaded: we cannot tell, so fal should try again later.
      logger.error({ err: (err as Error).message, requestId: req.get(WEBHOOK_HEADERS.requestId) }, 'cannot verify webhooks: no signing keys');
      return void res.status(503).json({ error: 'cannot verify signatures right now, retry later' });
    }
    if (!verdict.ok) return refuse(req, res, 401, 'signature', verdict.reason);
    // 4. Only now parse it.
    if (jsonNestsDeeperThan(raw, MAX_JSON_DEPTH)) return refuse(req, res, 422, 'too_deep', `body nests deeper than ${MAX_JSON_DEPTH} levels`);
    const parsed = parseFalWebhookBody(raw);
    if ('invalid' in parsed) return refuse(req, res, 400, 'malformed', parsed.invalid);
    // The signed header names the request; the body must be about the same one.
    if (parsed.request_id !== verdict.requestId) return refuse(req, res, 401, 'signature', 'request id in the header and the body differ');
    // 5. Durable record (or a refusal of one we cannot place), then 200. A failure answers 503 so fal delivers again.
    const delivery: WebhookDelivery = { requestId: verdict.requestId, userId: verdict.userId, body: parsed, query: queryOf(req), receivedAt: Date.now() };
    try {
      await opts.record(delivery);
    } catch (err) {
      if (err instanceof WebhookRefused) return refuse(req, res, err.status, err.code, err.message);
      if (opts.onRecordFailure) opts.onRecordFailure(err, verdict.requestId);
      else logger.error({ requestId: verdict.requestId, err: (err as Error).message }, 'could not record webhook; fal will re-deliver');
      return void res.status(503).json({ error: 'could not record the result, retry later' });
    }
    counters.recorded++;
    if (logger.isLevelEnabled('debug')) {
      const { [TOKEN_PARAM]: _token, ...query } = delivery.query;
      logger.debug({ requestId: verdict.requestId, status: parsed.status, query }, 'webhook recorded');
    }
    // The hot path's answer, written directly: the same bytes as res.json({ ok: true }) without its work.
    res.writeHead(200, OK_HEADERS).end(OK_BODY);
  };

  app.post('/fal/webhook', receive);

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
    refuse(req, res, status, status === 413 ? 'too_large' : 'body', message);
  });
  return app;
}
