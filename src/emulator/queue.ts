// The emulator's queue: accepted requests, FIFO runners that process them (IN_QUEUE → IN_PROGRESS →
// COMPLETED), results kept for status/result calls, files served from memory, webhooks on completion.
import { randomBytes, randomUUID } from 'node:crypto';
import { between, type EmulatorFaults } from './faults.ts';
import { fetchFace, renderPortrait, type ModelInput } from './model.ts';
import type { WebhookSender } from './webhooks.ts';

export type RequestStatus = 'IN_QUEUE' | 'IN_PROGRESS' | 'COMPLETED';

export interface EmulatedRequest {
  id: string;
  app: string;
  input: ModelInput;
  rawInput: unknown;
  webhookUrl?: string;
  status: RequestStatus;
  canceled: boolean;
  createdAt: number;
  output?: unknown;
  error?: { status: number; type: string; message: string; detail: unknown };
  logs: { message: string; level: string; timestamp: string }[];
  webhookDeliveries: number;
}

export interface QueueStats {
  submits: number;
  accepted: number;
  rejectedByFault: number;
  validationErrors: number;
  unauthorized: number;
  completed: number;
  failed: number;
  lost: number;
  canceled: number;
  webhooksSent: number;
  webhooksDelivered: number;
  webhooksDropped: number;
  webhooksDuplicated: number;
  fileGets: number;
  fileFailures: number;
  acceptedByRow: Record<string, number>;
}

export interface QueueOptions {
  baseUrl: () => string;
  runners: number;
  latencyMs: { min: number; max: number };
  sizeScale: number;
  random: () => number;
  faults: () => EmulatorFaults;
  webhooks: WebhookSender;
}

export class EmulatedQueue {
  readonly requests = new Map<string, EmulatedRequest>();
  readonly files = new Map<string, { data: Buffer; contentType: string }>();
  readonly stats: QueueStats = {
    submits: 0, accepted: 0, rejectedByFault: 0, validationErrors: 0, unauthorized: 0, completed: 0, failed: 0, lost: 0, canceled: 0,
    webhooksSent: 0, webhooksDelivered: 0, webhooksDropped: 0, webhooksDuplicated: 0, fileGets: 0, fileFailures: 0, acceptedByRow: {},
  };
  private readonly waiting: string[] = [];
  private busy = 0;
  private closed = false;
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly opts: QueueOptions) {}

  /** Accepts a validated request; a lost one is charged (counted) but forgotten at once. */
  accept(app: string, input: ModelInput, rawInput: unknown, webhookUrl: string | undefined): EmulatedRequest {
    const id = randomUUID();
    this.stats.accepted++;
    const row = rowOf(webhookUrl);
    if (row) this.stats.acceptedByRow[row] = (this.stats.acceptedByRow[row] ?? 0) + 1;
    const req: EmulatedRequest = { id, app, input, rawInput, webhookUrl, status: 'IN_QUEUE', canceled: false, createdAt: Date.now(), logs: [], webhookDeliveries: 0 };
    if (this.opts.random() < (this.opts.faults().lostRequestRate ?? 0)) {
      this.stats.lost++;
      return req;
    }
    this.requests.set(id, req);
    this.waiting.push(id);
    this.pump();
    return req;
  }

  queuePosition(id: string): number {
    const i = this.waiting.indexOf(id);
    return i < 0 ? 0 : i;
  }

  cancel(req: EmulatedRequest): boolean {
    if (req.status === 'COMPLETED') return false;
    req.canceled = true;
    const i = this.waiting.indexOf(req.id);
    if (i >= 0) this.waiting.splice(i, 1);
    req.status = 'COMPLETED';
    req.error = { status: 499, type: 'request_cancelled', message: 'Request was cancelled', detail: 'Request was cancelled' };
    this.stats.canceled++;
    return true;
  }

  close(): void {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, ms);
      this.timers.add(t);
    });
  }

  private pump(): void {
    while (!this.closed && this.busy < this.opts.runners && this.waiting.length) {
      const id = this.waiting.shift()!;
      const req = this.requests.get(id);
      if (!req || req.canceled) continue;
      this.busy++;
      void this.process(req).finally(() => {
        this.busy--;
        this.pump();
      });
    }
  }

  private async process(req: EmulatedRequest): Promise<void> {
    req.status = 'IN_PROGRESS';
    req.logs.push({ message: 'Processing request', level: 'INFO', timestamp: new Date().toISOString() });
    await this.sleep(between(this.opts.random, this.opts.latencyMs));
    if (this.closed || req.canceled) return;
    const seed = req.input.seed ?? Math.floor(this.opts.random() * 2 ** 31);
    try {
      let face: Buffer;
      try {
        face = await fetchFace(req.input.image_urls[0]!);
      } catch (err) {
        throw Object.assign(new Error(`Failed to load image ${req.input.image_urls[0]!.slice(0, 120)}: ${(err as Error).message}`), { status: 422, type: 'image_load_error' });
      }
      if (this.opts.random() < (this.opts.faults().modelErrorRate ?? 0)) {
        throw Object.assign(new Error('Model error: the runner failed while generating the image'), { status: 500, type: 'internal_error' });
      }
      const images = [];
      for (let n = 0; n < req.input.num_images; n++) {
        let img;
        try {
          img = await renderPortrait(face, req.input, seed + n, this.opts.sizeScale);
        } catch (err) {
          throw Object.assign(new Error(`Failed to decode image ${req.input.image_urls[0]!.slice(0, 120)}: ${(err as Error).message}`), { status: 422, type: 'image_load_error' });
        }
        const fileName = `${randomBytes(6).toString('hex')}.${img.ext}`;
        let url: string;
        if (req.input.sync_mode) url = `data:${img.contentType};base64,${img.data.toString('base64')}`;
        else {
          const token = randomBytes(12).toString('hex');
          this.files.set(`${token}/${fileName}`, { data: img.data, contentType: img.contentType });
          url = `${this.opts.baseUrl()}/files/${token}/${fileName}`;
        }
        images.push({ url, content_type: img.contentType, file_name: fileName, file_size: img.data.length, width: img.width, height: img.height });
      }
      req.output = { images, seed, prompt: req.input.prompt, has_nsfw_concepts: images.map(() => false), timings: { inference: 0.1 } };
      req.status = 'COMPLETED';
      this.stats.completed++;
      await this.notify(req, { request_id: req.id, gateway_request_id: req.id, status: 'OK', payload: req.output, error: null });
    } catch (err) {
      const e = err as Error & { status?: number; type?: string };
      req.error = { status: e.status ?? 500, type: e.type ?? 'internal_error', message: e.message, detail: e.message };
      req.status = 'COMPLETED';
      this.stats.failed++;
      await this.notify(req, {
        request_id: req.id,
        gateway_request_id: req.id,
        status: 'ERROR',
        payload: { detail: [{ loc: ['body', 'image_urls'], msg: e.message, type: req.error.type }] },
        error: `Invalid status code: ${req.error.status}`,
      });
    }
  }

  private async notify(req: EmulatedRequest, body: unknown): Promise<void> {
    if (!req.webhookUrl || this.closed) return;
    const faults = this.opts.faults();
    if (this.opts.random() < (faults.webhookDropRate ?? 0)) {
      this.stats.webhooksDropped++;
      return;
    }
    const copies = this.opts.random() < (faults.webhookDuplicateRate ?? 0) ? 2 : 1;
    if (copies === 2) this.stats.webhooksDuplicated++;
    const delay = between(this.opts.random, faults.webhookDelayMs);
    for (let c = 0; c < copies; c++) {
      void this.sleep(delay + c * 50).then(async () => {
        if (this.closed) return;
        this.stats.webhooksSent++;
        req.webhookDeliveries++;
        if (await this.opts.webhooks.deliver(req.webhookUrl!, req.id, body)) this.stats.webhooksDelivered++;
      });
    }
  }
}

/** `${run}/${row}` from our webhook URL's query, when it names one (lets checks count per row). */
function rowOf(webhookUrl: string | undefined): string | undefined {
  if (!webhookUrl) return undefined;
  try {
    const q = new URL(webhookUrl).searchParams;
    return q.get('run') && q.get('row') ? `${q.get('run')}/${q.get('row')}` : undefined;
  } catch {
    return undefined;
  }
}
