// The emulator's queue: accepted requests and their state (IN_QUEUE → IN_PROGRESS → COMPLETED),
// FIFO runners that process them with the model, cancellation, lost requests, and the webhook
// handed to delivery when a request finishes.
import { randomUUID } from 'node:crypto';
import type { Logger } from '../core/logger.ts';
import { between, chance, type EmulatorFaults, type MsRange } from './faults.ts';
import type { FileStore } from './files.ts';
import { generate, loadFace, ModelFailure, type ModelInput, type ModelOutput } from './model.ts';
import { rowKeyOf, type EmulatorStats } from './stats.ts';
import type { WebhookAttempt, WebhookBody, WebhookSender } from './webhooks.ts';

export type RequestStatus = 'IN_QUEUE' | 'IN_PROGRESS' | 'COMPLETED';

export interface RequestLog {
  message: string;
  level: 'INFO' | 'ERROR';
  source: 'USER';
  timestamp: string;
}

export interface RequestFailure {
  /** HTTP status of the result call. */
  status: number;
  /** error_type / X-Fal-Error-Type. */
  type: string;
  message: string;
  /** `detail` of the error body (and of the ERROR webhook's payload). */
  detail: unknown;
}

export interface EmulatedRequest {
  id: string;
  /** The path it was submitted to, e.g. fal-ai/flux-2-lora-gallery/face-to-full-portrait. */
  endpoint: string;
  /** What status/result/cancel URLs name: {owner}/{alias} (with a namespace prefix, if any). */
  app: string;
  input: ModelInput;
  rawInput: unknown;
  webhookUrl?: string;
  status: RequestStatus;
  lost: boolean;
  canceled: boolean;
  createdAt: number;
  startedAt?: number;
  completedAt?: number;
  output?: ModelOutput;
  failure?: RequestFailure;
  logs: RequestLog[];
  webhookAttempts: WebhookAttempt[];
}

export interface QueueOptions {
  runners: number;
  latencyMs: MsRange;
  sizeScale: number;
  random: { lost: () => number; model: () => number; latency: () => number; seed: () => number };
  faults: () => EmulatorFaults;
  stats: EmulatorStats;
  files: FileStore;
  webhooks: WebhookSender;
  logger?: Logger;
}

const CANCELED: RequestFailure = { status: 400, type: 'request_cancelled', message: 'Request was cancelled', detail: 'Request was cancelled' };

export class EmulatedQueue {
  private readonly requests = new Map<string, EmulatedRequest>();
  /** Lost requests: invisible to the API, kept for /_emulator/requests. */
  private readonly lostRequests = new Map<string, EmulatedRequest>();
  private readonly waiting: string[] = [];
  private readonly running = new Map<string, AbortController>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(private readonly opts: QueueOptions) {}

  /** Takes a validated request into the queue; a lost one is accepted (and charged) but forgotten. */
  accept(endpoint: string, app: string, input: ModelInput, rawInput: unknown, webhookUrl: string | undefined): EmulatedRequest {
    const { stats } = this.opts;
    const req: EmulatedRequest = {
      id: randomUUID(),
      endpoint,
      app,
      input,
      rawInput,
      webhookUrl,
      status: 'IN_QUEUE',
      lost: false,
      canceled: false,
      createdAt: Date.now(),
      logs: [],
      webhookAttempts: [],
    };
    stats.accepted++;
    const row = rowKeyOf(webhookUrl);
    if (row) stats.acceptedByRow[row] = (stats.acceptedByRow[row] ?? 0) + 1;
    if (chance(this.opts.random.lost, this.opts.faults().lostRequestRate)) {
      req.lost = true;
      stats.lost++;
      this.lostRequests.set(req.id, req);
      this.opts.logger?.debug({ requestId: req.id }, 'emulator: request lost (fault)');
      return req;
    }
    this.requests.set(req.id, req);
    this.waiting.push(req.id);
    this.log(req, 'Request queued');
    this.pump();
    return req;
  }

  /** A request the API knows (lost ones are not). */
  get(id: string): EmulatedRequest | undefined {
    return this.requests.get(id);
  }

  /** Any accepted request, lost ones included (for inspection). */
  inspect(id: string): EmulatedRequest | undefined {
    return this.requests.get(id) ?? this.lostRequests.get(id);
  }

  /** 0-based position among the waiting requests (0 once it runs). */
  queuePosition(id: string): number {
    return Math.max(0, this.waiting.indexOf(id));
  }

  /** Cancels a queued or running request; false when it has already completed. */
  cancel(req: EmulatedRequest): boolean {
    if (req.status === 'COMPLETED') return false;
    req.canceled = true;
    const i = this.waiting.indexOf(req.id);
    if (i >= 0) this.waiting.splice(i, 1);
    this.running.get(req.id)?.abort();
    req.status = 'COMPLETED';
    req.completedAt = Date.now();
    req.failure = CANCELED;
    this.log(req, 'Request cancelled', 'ERROR');
    this.opts.stats.canceled++;
    return true;
  }

  close(): void {
    this.closed = true;
    for (const ctl of this.running.values()) ctl.abort();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.waiting.length = 0;
  }

  private pump(): void {
    while (!this.closed && this.running.size < this.opts.runners && this.waiting.length > 0) {
      const req = this.requests.get(this.waiting.shift()!);
      if (!req || req.canceled) continue;
      const ctl = new AbortController();
      this.running.set(req.id, ctl);
      void this.process(req, ctl.signal).finally(() => {
        this.running.delete(req.id);
        this.pump();
      });
    }
  }

  private async process(req: EmulatedRequest, signal: AbortSignal): Promise<void> {
    const stopped = () => this.closed || req.canceled;
    req.status = 'IN_PROGRESS';
    req.startedAt = Date.now();
    this.log(req, 'Runner picked up the request');
    const drawnSeed = Math.floor(this.opts.random.seed() * 2 ** 32);
    try {
      await this.sleep(between(this.opts.random.latency, this.opts.latencyMs), signal);
      if (stopped()) return;
      this.log(req, 'Downloading the input image');
      const face = await loadFace(req.input.image_urls[0]!, signal);
      if (stopped()) return;
      if (chance(this.opts.random.model, this.opts.faults().modelErrorRate)) {
        const msg = 'Model error: the runner crashed while generating the image (emulated fault)';
        throw new ModelFailure(500, 'internal_server_error', msg, msg);
      }
      this.log(req, `Generating ${req.input.num_images} image(s)`);
      const output = await generate(req.input, face, req.input.seed ?? drawnSeed, this.opts.sizeScale, (img) =>
        req.input.sync_mode ? `data:${img.contentType};base64,${img.data.toString('base64')}` : this.opts.files.put(img.data, img.contentType, img.fileName),
      );
      if (stopped()) return;
      req.output = output;
      this.finish(req);
      this.opts.stats.completed++;
      this.opts.webhooks.dispatch(req, { request_id: req.id, gateway_request_id: req.id, status: 'OK', payload: output, error: null });
    } catch (err) {
      if (stopped()) return;
      req.failure =
        err instanceof ModelFailure
          ? { status: err.status, type: err.type, message: err.message, detail: err.detail }
          : { status: 500, type: 'internal_server_error', message: `Internal error: ${(err as Error).message}`, detail: `Internal error: ${(err as Error).message}` };
      this.log(req, req.failure.message, 'ERROR');
      this.finish(req);
      this.opts.stats.failed++;
      const body: WebhookBody = {
        request_id: req.id,
        gateway_request_id: req.id,
        status: 'ERROR',
        payload: { detail: req.failure.detail },
        error: `Invalid status code: ${req.failure.status}`,
      };
      this.opts.webhooks.dispatch(req, body);
    }
  }

  private finish(req: EmulatedRequest): void {
    req.status = 'COMPLETED';
    req.completedAt = Date.now();
    this.log(req, req.failure ? 'Request failed' : 'Request completed');
    this.opts.logger?.debug({ requestId: req.id, ok: !req.failure }, 'emulator: request finished');
  }

  private log(req: EmulatedRequest, message: string, level: RequestLog['level'] = 'INFO'): void {
    req.logs.push({ message, level, source: 'USER', timestamp: new Date().toISOString() });
  }

  /** Resolves after `ms`, or at once when `signal` aborts (a cancelled request frees its runner). */
  private sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.timers.delete(t);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.timers.add(t);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}
