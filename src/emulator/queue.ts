// The emulator's queue: accepted requests and their state (IN_QUEUE → IN_PROGRESS → COMPLETED),
// a fixed number of concurrency slots that run them FIFO (the rest wait with a queue_position, as
// on fal: it never refuses a submit for concurrency), validation in the runner, cancellation, lost
// requests, and the webhook handed to delivery when a request finishes.
import { randomUUID } from 'node:crypto';
import type { Logger } from '../core/logger.ts';
import { between, chance, type EmulatorFaults, type MsRange } from './faults.ts';
import type { FileStore } from './files.ts';
import type { RequestJournal } from './journal.ts';
import { emulatedFailure, pickError } from './errors.ts';
import { describeUrl, generate, loadFace, ModelFailure, type FaceSource, type ModelOutput } from './model.ts';
import { validateInput, type ModelInput } from './schema.ts';
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
  /** model: `detail` is a list of typed entries; request: a string, with `error_type` in the body. */
  kind: 'model' | 'request';
  /** X-Fal-Retryable of the result call. */
  retryable?: boolean;
  /** X-Fal-Request-Timeout-Type ('user': the start timeout the submit asked for ran out). */
  timeoutType?: 'user';
}

export interface EmulatedRequest {
  id: string;
  /** The path it was submitted to, e.g. fal-ai/flux-2-lora-gallery/face-to-full-portrait. */
  endpoint: string;
  /** What status/result/cancel URLs name: {owner}/{alias} (with a namespace prefix, if any). */
  app: string;
  /** Set once validated (at submit with validateAt: 'submit', else by the runner). */
  input?: ModelInput;
  rawInput: unknown;
  webhookUrl?: string;
  /** The submit's X-Fal-* headers (object lifecycle, start timeout, priority…), as sent. */
  falHeaders: Record<string, string>;
  status: RequestStatus;
  lost: boolean;
  /** Stopped by a cancel (a running request whose runner ignored the cancel is not). */
  canceled: boolean;
  cancelRequested: boolean;
  createdAt: number;
  startedAt?: number;
  completedAt?: number;
  output?: ModelOutput;
  failure?: RequestFailure;
  logs: RequestLog[];
  webhookAttempts: WebhookAttempt[];
}

export interface QueueOptions {
  /** Requests run at once (fal: the account's concurrency slots); the rest wait IN_QUEUE. */
  slots: number;
  latencyMs: MsRange;
  sizeScale: number;
  /** Share of cancels of a running request whose runner finishes anyway (billed, webhook sent). */
  runningCancelCompletesRate: number;
  random: { lost: () => number; model: () => number; latency: () => number; seed: () => number; cancel: () => number; errors: () => number };
  faults: () => EmulatorFaults;
  stats: EmulatorStats;
  files: FileStore;
  webhooks: WebhookSender;
  /** How the runner reaches faces (own files, private-network refusal). */
  faceSource: Omit<FaceSource, 'signal'>;
  /** Where accepted and finished requests are written (the embedded stack's data dir). */
  journal?: RequestJournal;
  logger?: Logger;
}

/** A request error of fal's documented kind: flat {detail, error_type}, X-Fal-Error-Type. */
const CANCELED: RequestFailure = {
  status: 499,
  type: 'client_cancelled',
  message: 'Request was cancelled by the client',
  detail: 'Request was cancelled by the client',
  kind: 'request',
  retryable: false,
};

/** fal's start timeout ran out while the request was still queued: 504, X-Fal-Request-Timeout-Type: user, not billed. */
function startTimedOut(seconds: number): RequestFailure {
  const msg = `Request timed out: no runner started it within its start timeout of ${seconds} seconds`;
  return { status: 504, type: 'request_timeout', message: msg, detail: msg, kind: 'request', retryable: false, timeoutType: 'user' };
}

/** fal's price unit for this endpoint: output megapixels of 1024×1024, each image rounded up to a whole one. */
function billedMegapixels(size: { width: number; height: number }): number {
  return Math.max(1, Math.ceil((size.width * size.height) / (1024 * 1024)));
}

export type CancelOutcome = 'removed' | 'signalled' | 'already_completed';

export class EmulatedQueue {
  private readonly requests = new Map<string, EmulatedRequest>();
  /** Lost requests: invisible to the API, kept for /_emulator/requests. */
  private readonly lostRequests = new Map<string, EmulatedRequest>();
  private readonly waiting: string[] = [];
  private readonly running = new Map<string, AbortController>();
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(private readonly opts: QueueOptions) {}

  /**
   * Takes a request into the queue; a lost one is accepted (and charged) but forgotten. `input` is
   * given when it was validated at submit (validateAt: 'submit'); otherwise the runner validates it.
   */
  accept(
    endpoint: string,
    app: string,
    rawInput: unknown,
    webhookUrl: string | undefined,
    input?: ModelInput,
    falHeaders: Record<string, string> = {},
  ): EmulatedRequest {
    const { stats } = this.opts;
    const req: EmulatedRequest = {
      id: randomUUID(),
      endpoint,
      app,
      input,
      rawInput,
      webhookUrl,
      falHeaders,
      status: 'IN_QUEUE',
      lost: false,
      canceled: false,
      cancelRequested: false,
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
      this.opts.journal?.accepted(req);
      this.opts.logger?.debug({ requestId: req.id }, 'emulator: request lost (fault)');
      return req;
    }
    this.opts.journal?.accepted(req);
    this.requests.set(req.id, req);
    this.waiting.push(req.id);
    this.log(req, 'Request queued');
    this.enforceStartTimeout(req);
    this.pump();
    stats.maxQueued = Math.max(stats.maxQueued, this.waiting.length);
    return req;
  }

  /**
   * Takes back the books of an earlier emulator on the same journal: finished requests answer status
   * and result again, unfinished ones run again (fal keeps running them while we are away).
   */
  restore(): void {
    const { stats } = this.opts;
    for (const e of this.opts.journal?.read() ?? []) {
      if (e.t === 'accept') {
        const { t: _t, ...fields } = e;
        const req: EmulatedRequest = { falHeaders: {}, ...fields, status: 'IN_QUEUE', canceled: false, cancelRequested: false, logs: [], webhookAttempts: [] };
        stats.accepted++;
        const row = rowKeyOf(e.webhookUrl);
        if (row) stats.acceptedByRow[row] = (stats.acceptedByRow[row] ?? 0) + 1;
        if (e.lost) {
          stats.lost++;
          this.lostRequests.set(req.id, req);
        } else this.requests.set(req.id, req);
      } else {
        const { t: _t, ...fields } = e;
        const req = this.requests.get(e.id);
        if (req) Object.assign(req, fields, { status: 'COMPLETED' });
      }
    }
    for (const req of this.requests.values()) if (req.status !== 'COMPLETED') this.waiting.push(req.id);
    this.pump();
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

  /**
   * fal's cancel: a queued request is removed and never runs; a running one only gets a signal, and
   * its runner may finish anyway (`runningCancelCompletesRate`): then it completes, is billed and
   * sends its webhook like any other.
   */
  cancel(req: EmulatedRequest): CancelOutcome {
    if (req.status === 'COMPLETED') return 'already_completed';
    if (req.status === 'IN_PROGRESS') {
      if (req.cancelRequested) return 'signalled';
      req.cancelRequested = true;
      this.log(req, 'Cancellation requested: signalling the runner');
      if (chance(this.opts.random.cancel, this.opts.runningCancelCompletesRate)) return 'signalled';
      this.running.get(req.id)?.abort();
      this.stop(req);
      return 'signalled';
    }
    const i = this.waiting.indexOf(req.id);
    if (i >= 0) this.waiting.splice(i, 1);
    this.stop(req);
    return 'removed';
  }

  close(): void {
    this.closed = true;
    for (const ctl of this.running.values()) ctl.abort();
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    this.waiting.length = 0;
  }

  /**
   * X-Fal-Request-Timeout: fal's time-to-start deadline, in seconds from the submit. A request no
   * runner has taken by then ends with 504 (X-Fal-Request-Timeout-Type: user) and an ERROR webhook;
   * once a runner took it, the timeout no longer applies.
   */
  private enforceStartTimeout(req: EmulatedRequest): void {
    const seconds = Number(req.falHeaders['x-fal-request-timeout']);
    if (!Number.isFinite(seconds) || seconds <= 0) return;
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (this.closed || req.status !== 'IN_QUEUE' || req.canceled) return;
      const i = this.waiting.indexOf(req.id);
      if (i >= 0) this.waiting.splice(i, 1);
      req.failure = startTimedOut(seconds);
      this.log(req, req.failure.message, 'ERROR');
      this.finish(req);
      this.opts.stats.failed++;
      this.opts.stats.startTimeouts++;
      this.opts.webhooks.dispatch(req, this.errorWebhook(req, req.failure));
    }, seconds * 1000);
    this.timers.add(t);
  }

  /** The ERROR webhook of a failed request: payload as the result call's body (request errors carry error_type). */
  private errorWebhook(req: EmulatedRequest, f: RequestFailure): WebhookBody {
    return {
      request_id: req.id,
      gateway_request_id: req.id,
      status: 'ERROR',
      payload: f.kind === 'request' ? { detail: f.detail, error_type: f.type } : { detail: f.detail },
      error: `Invalid status code: ${f.status}`,
    };
  }

  private stop(req: EmulatedRequest): void {
    req.canceled = true;
    req.status = 'COMPLETED';
    req.completedAt = Date.now();
    req.failure = CANCELED;
    this.opts.journal?.finished(req);
    this.log(req, 'Request cancelled', 'ERROR');
    this.opts.stats.canceled++;
  }

  private pump(): void {
    while (!this.closed && this.running.size < this.opts.slots && this.waiting.length > 0) {
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
    const { stats } = this.opts;
    req.status = 'IN_PROGRESS';
    req.startedAt = Date.now();
    this.log(req, 'Runner picked up the request');
    // Drawn for every request, so the seed stream stays aligned whatever the inputs.
    const drawnSeed = (BigInt(Math.floor(this.opts.random.seed() * 2 ** 32)) << 32n) | BigInt(Math.floor(this.opts.random.seed() * 2 ** 32));
    try {
      // Like fal: the queue takes any JSON; the app validates it once a runner has it.
      if (!req.input) {
        const v = validateInput(req.rawInput);
        if (!v.ok) {
          stats.failedValidation++;
          const first = v.detail[0];
          throw new ModelFailure(422, first?.type ?? 'validation_error', `Invalid input: ${v.detail.map((d) => `${d.loc.join('.')}: ${d.msg}`).join('; ')}`, v.detail);
        }
        req.input = v.input;
      }
      const input = req.input;
      await this.sleep(between(this.opts.random.latency, this.opts.latencyMs), signal);
      if (stopped()) return;
      this.log(req, 'Downloading the input image');
      const face = await loadFace(input.image_urls[0]!, { ...this.opts.faceSource, signal });
      if (stopped()) return;
      if (chance(this.opts.random.model, this.opts.faults().modelErrorRate)) {
        const msg = 'Model error: the runner crashed while generating the image (emulated fault)';
        throw new ModelFailure(500, 'runner_server_error', msg, msg, 'request');
      }
      const injected = pickError(this.opts.random.errors, this.opts.faults().errorRates);
      if (injected) {
        stats.errorsByType[injected] = (stats.errorsByType[injected] ?? 0) + 1;
        throw emulatedFailure(injected, describeUrl(input.image_urls[0]!));
      }
      this.log(req, `Generating ${input.num_images} image(s)`);
      const output = await generate(input, face, input.seed ?? drawnSeed, this.opts.sizeScale, (img) =>
        input.sync_mode ? `data:${img.contentType};base64,${img.data.toString('base64')}` : this.opts.files.put(img.data, img.contentType, img.fileName),
      );
      if (stopped()) return;
      req.output = output;
      this.finish(req);
      stats.completed++;
      stats.billed++;
      stats.billedMegapixels += input.num_images * billedMegapixels(input.size ?? face);
      if (req.cancelRequested) {
        stats.cancelIgnored++;
        this.log(req, 'The runner finished despite the cancellation');
      }
      this.opts.webhooks.dispatch(req, { request_id: req.id, gateway_request_id: req.id, status: 'OK', payload: output, error: null });
    } catch (err) {
      if (stopped()) return;
      req.failure =
        err instanceof ModelFailure
          ? { status: err.status, type: err.type, message: err.message, detail: err.detail, kind: err.kind, retryable: err.retryable }
          : {
              status: 500,
              type: 'runner_server_error',
              message: `Internal error: ${(err as Error).message}`,
              detail: `Internal error: ${(err as Error).message}`,
              kind: 'request',
            };
      this.log(req, req.failure.message, 'ERROR');
      this.finish(req);
      stats.failed++;
      this.opts.webhooks.dispatch(req, this.errorWebhook(req, req.failure));
    }
  }

  private finish(req: EmulatedRequest): void {
    req.status = 'COMPLETED';
    req.completedAt = Date.now();
    this.opts.journal?.finished(req);
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
