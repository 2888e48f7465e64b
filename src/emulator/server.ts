// A local stand-in for fal's queue API over real HTTP, so the unmodified @fal-ai/client works against
// it (its URLs rewritten from https://queue.fal.run and https://rest.fal.ai to this server): submit
// with fal_webhook, status, result, cancel, the JWKS, signed webhooks, fal.storage uploads, /files —
// plus /_emulator/* for tests.
//
// Strict by default, like fal: a submit is queued whatever its input and the runner validates it
// (COMPLETED, then 422 from result / an ERROR webhook); `slots` requests run at once and the rest
// wait IN_QUEUE; webhooks are retried over 2 hours. Options bring back kinder behaviour where a test
// needs it (validateAt: 'submit', more slots, timeScale).
//
// Split by protocol concern, as fal-js splits its client: submit.ts (submit), requests.ts (status,
// result, cancel), auth.ts (the key check), storage.ts and files.ts (fal storage, /files),
// webhooks.ts (signed delivery). This file holds the options, the wiring and the routing.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Logger } from '../core/logger.ts';
import { keyCheck } from './auth.ts';
import { randomStreams, seededRandom, type EmulatorFaults, type MsRange } from './faults.ts';
import { FileStore } from './files.ts';
import { sendJson } from './http.ts';
import { RequestJournal } from './journal.ts';
import { createSigningKey, type SigningKey } from './keys.ts';
import { unreachableFromFal } from './network.ts';
import { EmulatedQueue, type EmulatedRequest } from './queue.ts';
import { DEFAULT_RESULT_RETENTION, requestCalls, type ResultRetention } from './requests.ts';
import { createStats, type EmulatorStats } from './stats.ts';
import { StorageUploads } from './storage.ts';
import { submitCall } from './submit.ts';
import { DEFAULT_WEBHOOK_RETRY, WebhookSender, type WebhookRetry } from './webhooks.ts';

export interface EmulatorOptions {
  /** 0 (default) picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Base URL put in response/status/cancel and file URLs (default http://host:port). */
  publicUrl?: string;
  /** Keys accepted (`Authorization: Key …`); default: any non-empty key. Others get 401. */
  apiKeys?: string[];
  /** Keys answered 403. */
  forbiddenKeys?: string[];
  /** X-Fal-Webhook-User-Id; default "emulator-user". */
  userId?: string;
  /** The webhook signing key (tests sign webhooks of their own with it, as any fal account's are); default: a new one. */
  signingKey?: SigningKey;
  /** Processing time of one request; default 50..150 ms. */
  latencyMs?: MsRange;
  /** Concurrency slots: requests run at once, the rest wait IN_QUEUE; default 2 (fal's starting limit). */
  slots?: number;
  /**
   * Where input is validated: 'runner' (default, like fal: queued, takes a slot, then fails with 422
   * from result and an ERROR webhook) or 'submit' (the old kind emulator: 422 at submit, nothing queued).
   */
  validateAt?: 'runner' | 'submit';
  /** Share of cancels of a running request whose runner finishes anyway (billed, webhook sent); default 1. */
  runningCancelCompletesRate?: number;
  /** Scales generated image dimensions (tests use small images); default 1. Omitted image_size: the face's own size. */
  sizeScale?: number;
  /** Seed of the fault decisions (reproducible runs); default: time-based. */
  seed?: number;
  /** fal's webhook schedule (10 tries over 2 h) by default. */
  webhookRetry?: Partial<WebhookRetry>;
  /** Multiplies the webhook retry delays; default 1 (tests: e.g. 0.001 → the 2 h become ~7 s). */
  timeScale?: number;
  /**
   * Largest result payload included in a webhook; above it the webhook carries payload null and a
   * payload_error. fal does not publish its limit: default 10 MiB.
   */
  maxWebhookPayloadBytes?: number;
  /**
   * false: like real fal, refuse to fetch faces from, or post webhooks to, loopback and private
   * addresses (faces uploaded to this emulator's fal storage still work). Default true.
   */
  privateNetwork?: boolean;
  faults?: EmulatorFaults;
  /** How long a completed request's result is kept for the result call (fal's documented defaults). */
  resultRetention?: Partial<ResultRetention>;
  /** Keep requests and files in this directory and take them back on start (the embedded stack). */
  stateDir?: string;
  logger?: Logger;
}

export interface RunningEmulator {
  /** Base URL, e.g. http://127.0.0.1:PORT: replace https://queue.fal.run with it. */
  url: string;
  jwksUrl: string;
  port: number;
  setFaults(partial: EmulatorFaults): void;
  stats(): EmulatorStats;
  close(): Promise<void>;
}

/** Endpoint namespaces the client puts before {owner}/{alias}. */
const NAMESPACES = new Set(['workflows', 'comfy']);

export async function startEmulator(opts: EmulatorOptions = {}): Promise<RunningEmulator> {
  const host = opts.host ?? '127.0.0.1';
  const retention: ResultRetention = { ...DEFAULT_RESULT_RETENTION, ...opts.resultRetention };
  const key = opts.signingKey ?? createSigningKey();
  const stats = createStats();
  const seed = opts.seed ?? Date.now();
  const random = randomStreams(seed);
  let faults: EmulatorFaults = { ...opts.faults };
  let baseUrl = '';
  const journal = opts.stateDir ? new RequestJournal(opts.stateDir) : undefined;
  const files = new FileStore(() => baseUrl, stats, random.files, () => faults, opts.stateDir && join(opts.stateDir, 'files'));
  const storage = new StorageUploads(files, () => baseUrl, stats);
  const refuse = opts.privateNetwork === false ? unreachableFromFal : undefined;
  const webhooks = new WebhookSender({
    privateKey: key.privateKey,
    userId: opts.userId ?? 'emulator-user',
    retry: { ...DEFAULT_WEBHOOK_RETRY, ...opts.webhookRetry },
    timeScale: opts.timeScale ?? 1,
    maxPayloadBytes: opts.maxWebhookPayloadBytes ?? 10 * 1024 * 1024,
    refuse,
    stats,
    random: random.webhook,
    faults: () => faults,
    logger: opts.logger,
  });
  const queue = new EmulatedQueue({
    slots: Math.max(1, opts.slots ?? 2),
    latencyMs: opts.latencyMs ?? { min: 50, max: 150 },
    sizeScale: opts.sizeScale ?? 1,
    runningCancelCompletesRate: opts.runningCancelCompletesRate ?? 1,
    // Its own stream (not in faults.ts's list), so adding it shifts no other decision.
    random: { ...random, cancel: seededRandom(Math.imul(seed >>> 0, 0x2545f491) ^ 0x5bd1e995) },
    faults: () => faults,
    stats,
    files,
    webhooks,
    faceSource: { ownFile: (url) => files.bytesOf(url), refuse },
    journal,
    logger: opts.logger,
  });

  const authorized = keyCheck(opts, stats);
  const submit = submitCall({ queue, stats, authorized, random, faults: () => faults, validateAt: opts.validateAt, baseUrl: () => baseUrl, logger: opts.logger });
  const requestCall = requestCalls({ queue, stats, authorized, baseUrl: () => baseUrl, retention, logger: opts.logger });

  /** GET /_emulator/requests/{id}: everything about a request, lost ones included. */
  function inspectBody(r: EmulatedRequest): Record<string, unknown> {
    return {
      id: r.id,
      endpoint: r.endpoint,
      app: r.app,
      status: r.lost ? 'LOST' : r.status,
      lost: r.lost,
      canceled: r.canceled,
      cancelRequested: r.cancelRequested,
      input: r.rawInput,
      webhookUrl: r.webhookUrl ?? null,
      falHeaders: r.falHeaders,
      createdAt: r.createdAt,
      startedAt: r.startedAt ?? null,
      completedAt: r.completedAt ?? null,
      output: r.output ?? null,
      failure: r.failure ?? null,
      webhookAttempts: r.webhookAttempts,
      logs: r.logs,
    };
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://emulator');
    let parts: string[];
    try {
      parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
    } catch {
      return sendJson(res, 400, { detail: 'Malformed path' });
    }
    const method = req.method ?? 'GET';

    // Public: the JWKS, generated files, the emulator's own inspection endpoints.
    if (url.pathname === '/.well-known/jwks.json' && method === 'GET') return sendJson(res, 200, key.jwks, { 'cache-control': 'max-age=300' });
    if (parts[0] === 'files' && (method === 'GET' || method === 'HEAD')) return files.serve(req, res, parts);
    // fal storage (the client's rest.fal.ai calls): initiate needs the key, the PUT URL is the capability.
    if (parts[0] === 'storage' && parts[1] === 'upload') {
      if (parts[2] === 'initiate' && parts.length === 3 && method === 'POST') return authorized(req, res) ? storage.initiate(req, res) : undefined;
      if (parts[2] && parts.length === 3 && method === 'PUT') return storage.put(req, res, parts[2]);
      req.resume();
      return sendJson(res, 404, { detail: 'Not Found' });
    }
    if (parts[0] === '_emulator' && method === 'GET') {
      if (parts[1] === 'stats' && parts.length === 2) return sendJson(res, 200, stats);
      if (parts[1] === 'requests' && parts[2] && parts.length === 3) {
        const r = queue.inspect(parts[2]);
        return r ? sendJson(res, 200, inspectBody(r)) : sendJson(res, 404, { detail: 'Request not found' });
      }
      return sendJson(res, 404, { detail: 'Not Found' });
    }

    const ns = parts[0] !== undefined && NAMESPACES.has(parts[0]) ? 1 : 0;
    if (parts.length >= ns + 4 && parts[ns + 2] === 'requests') return requestCall(req, res, url, parts, ns);
    if (method === 'POST' && parts.length >= ns + 2) return submit(req, res, url, parts, ns);
    req.resume();
    return sendJson(res, 404, { detail: 'Not Found' });
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: Error) => {
      opts.logger?.error({ err: err.message }, 'emulator: handler failed');
      if (!res.headersSent) sendJson(res, 500, { detail: 'Internal Server Error' });
      else res.destroy();
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const urlHost = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  baseUrl = (opts.publicUrl ?? `http://${urlHost}:${port}`).replace(/\/+$/, '');
  opts.logger?.info({ url: baseUrl }, 'emulator: listening');
  queue.restore();

  let closing: Promise<void> | undefined;
  return {
    url: baseUrl,
    jwksUrl: `${baseUrl}/.well-known/jwks.json`,
    port,
    setFaults(partial) {
      faults = { ...faults, ...partial };
    },
    stats: () => structuredClone(stats),
    close() {
      closing ??= (async () => {
        queue.close();
        webhooks.close();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          server.closeAllConnections();
        });
        files.clear();
      })();
      return closing;
    },
  };
}
