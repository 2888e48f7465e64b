// A local stand-in for fal's queue API, spoken over real HTTP so the unmodified @fal-ai/client works
// against it: submit (with fal_webhook), status, result, cancel, JWKS, signed webhooks, /files.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../core/logger.ts';
import { seededRandom, type EmulatorFaults } from './faults.ts';
import { createSigningKey } from './keys.ts';
import { validateInput } from './model.ts';
import { EmulatedQueue, type QueueStats } from './queue.ts';
import { createWebhookSender, type WebhookRetry } from './webhooks.ts';

export interface EmulatorOptions {
  port?: number;
  host?: string;
  /** Keys accepted (`Authorization: Key …`); default: any non-empty key. */
  apiKeys?: string[];
  /** Keys answered 403. */
  forbiddenKeys?: string[];
  userId?: string;
  latencyMs?: { min: number; max: number };
  runners?: number;
  /** Scales generated image dimensions (tests use small images). */
  sizeScale?: number;
  seed?: number;
  webhookRetry?: Partial<WebhookRetry>;
  faults?: EmulatorFaults;
  logger?: Logger;
}

export interface RunningEmulator {
  url: string;
  jwksUrl: string;
  port: number;
  setFaults(partial: EmulatorFaults): void;
  stats(): QueueStats;
  close(): Promise<void>;
}

const MAX_BODY = 32 * 1024 * 1024;

export async function startEmulator(opts: EmulatorOptions = {}): Promise<RunningEmulator> {
  const key = createSigningKey();
  let faults: EmulatorFaults = { ...opts.faults };
  const random = seededRandom(opts.seed ?? Date.now());
  let baseUrl = '';
  const webhooks = createWebhookSender({
    privateKey: key.privateKey,
    userId: opts.userId ?? 'emulator-user',
    retry: { attempts: 10, baseDelayMs: 500, maxDelayMs: 10_000, ...opts.webhookRetry },
  });
  const queue = new EmulatedQueue({
    baseUrl: () => baseUrl,
    runners: opts.runners ?? 4,
    latencyMs: opts.latencyMs ?? { min: 50, max: 150 },
    sizeScale: opts.sizeScale ?? 1,
    random,
    faults: () => faults,
    webhooks,
  });

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      opts.logger?.error({ err: err.message }, 'emulator error');
      if (!res.headersSent) json(res, 500, { detail: 'Internal Server Error' });
      else res.end();
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', baseUrl);
    const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    const method = req.method ?? 'GET';

    if (method === 'GET' && url.pathname === '/.well-known/jwks.json') return json(res, 200, key.jwks);
    if (method === 'GET' && url.pathname === '/_emulator/stats') return json(res, 200, queue.stats);
    if (method === 'GET' && parts[0] === '_emulator' && parts[1] === 'requests' && parts[2]) {
      const r = queue.requests.get(parts[2]);
      return r ? json(res, 200, { ...r, output: r.output ? '(kept)' : undefined }) : json(res, 404, { detail: 'Request not found' });
    }
    if (method === 'GET' && parts[0] === 'files' && parts.length === 3) {
      queue.stats.fileGets++;
      if (random() < (faults.imageDownloadFailureRate ?? 0)) {
        queue.stats.fileFailures++;
        return json(res, 500, { detail: 'storage backend error' });
      }
      const f = queue.files.get(`${parts[1]}/${parts[2]}`);
      if (!f) return json(res, 404, { detail: 'File not found' });
      res.writeHead(200, { 'content-type': f.contentType, 'content-length': f.data.length });
      return void res.end(f.data);
    }

    const auth = req.headers.authorization ?? '';
    const apiKey = /^Key (.+)$/.exec(auth)?.[1];
    if (!apiKey || (opts.apiKeys && !opts.apiKeys.includes(apiKey))) {
      req.resume();
      queue.stats.unauthorized++;
      return json(res, 401, { detail: 'Cannot access application: invalid or missing credentials' });
    }
    if (opts.forbiddenKeys?.includes(apiKey)) {
      req.resume();
      queue.stats.unauthorized++;
      return json(res, 403, { detail: 'User is locked. Reason: exhausted balance' });
    }

    // {owner}/{alias}/requests/{id}[/status|/cancel]: note these drop the endpoint's sub-path.
    if (parts.length >= 4 && parts[2] === 'requests') {
      const [owner, alias, , id, action] = parts;
      const r = queue.requests.get(id!);
      if (!r || r.app.split('/').slice(0, 2).join('/') !== `${owner}/${alias}`) return json(res, 404, { detail: 'Request not found' });
      const responseUrl = `${baseUrl}/${owner}/${alias}/requests/${r.id}`;
      if (method === 'GET' && action === 'status') {
        const body: Record<string, unknown> = { status: r.status, request_id: r.id, response_url: responseUrl };
        if (r.status === 'IN_QUEUE') body.queue_position = queue.queuePosition(r.id);
        if (url.searchParams.get('logs') === '1') body.logs = r.logs;
        if (r.error) Object.assign(body, { error: r.error.message, error_type: r.error.type });
        return json(res, 200, body);
      }
      if (method === 'GET' && action === undefined) {
        if (r.status !== 'COMPLETED') return json(res, 400, { detail: 'Request is still in progress' });
        if (r.error) return json(res, r.error.status === 499 ? 400 : r.error.status, { detail: r.error.detail }, { 'x-fal-error-type': r.error.type });
        return json(res, 200, r.output, { 'x-fal-request-id': r.id });
      }
      if (method === 'PUT' && action === 'cancel') {
        return queue.cancel(r) ? json(res, 202, { status: 'CANCELLATION_REQUESTED' }) : json(res, 400, { status: 'ALREADY_COMPLETED' });
      }
      return json(res, 405, { detail: 'Method Not Allowed' });
    }

    if (method === 'POST' && parts.length >= 2) {
      queue.stats.submits++;
      const raw = await readBody(req);
      if (raw === undefined) return json(res, 413, { detail: 'Request body too large' });
      if (random() < (faults.submitErrorRate ?? 0)) {
        queue.stats.rejectedByFault++;
        const r = random();
        if (r < 0.5) return json(res, 429, { detail: 'Too many requests' }, { 'retry-after': '1' });
        return json(res, r < 0.75 ? 500 : 503, { detail: 'Service temporarily unavailable' });
      }
      let body: unknown;
      try {
        body = JSON.parse(raw.toString('utf8') || 'null');
      } catch {
        queue.stats.validationErrors++;
        return json(res, 422, { detail: [{ loc: ['body'], msg: 'JSON decode error', type: 'json_invalid' }] });
      }
      const v = validateInput(body);
      if (!v.ok) {
        queue.stats.validationErrors++;
        return json(res, 422, { detail: v.detail });
      }
      const app = parts.join('/');
      const r = queue.accept(app, v.input, body, url.searchParams.get('fal_webhook') ?? undefined);
      const base = `${baseUrl}/${parts[0]}/${parts[1]}/requests/${r.id}`;
      return json(res, 200, {
        request_id: r.id,
        gateway_request_id: r.id,
        status: 'IN_QUEUE',
        queue_position: queue.queuePosition(r.id),
        response_url: base,
        status_url: `${base}/status`,
        cancel_url: `${base}/cancel`,
      }, { 'x-fal-request-id': r.id });
    }
    return json(res, 404, { detail: 'Not Found' });
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', resolve);
  });
  const port = (server.address() as AddressInfo).port;
  baseUrl = `http://${opts.host ?? '127.0.0.1'}:${port}`;
  return {
    url: baseUrl,
    jwksUrl: `${baseUrl}/.well-known/jwks.json`,
    port,
    setFaults(partial) {
      faults = { ...faults, ...partial };
    },
    stats: () => structuredClone(queue.stats),
    async close() {
      queue.close();
      webhooks.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': data.length, ...headers });
  res.end(data);
}

function readBody(req: IncomingMessage): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => resolve(size > MAX_BODY ? undefined : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}
