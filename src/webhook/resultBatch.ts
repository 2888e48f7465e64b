// Group commit of result jobs: the webhooks whose record step runs in the same turn of the event loop
// — and those that arrive while earlier batches are on their way to Redis — are added with one BullMQ
// `addBulk` (one pipeline, one round trip) instead of one `add` each. A caller's promise settles only
// once its whole batch is in Redis, so its 200 is still sent after the job is durable; a failed batch
// rejects every caller in it (each webhook answers 503 and fal re-delivers it; a job of the batch that
// did land makes its re-delivery a no-op, by job id).
import type { JobsOptions } from 'bullmq';
import type { ResultJob } from '../core/queues.ts';

export interface BulkResultJob {
  name: string;
  data: ResultJob;
  opts: JobsOptions;
}

export interface ResultBatchOptions {
  /** Most jobs in one round trip. Default 128. */
  maxBatch?: number;
  /** Batches on their way to Redis at once; more waiting webhooks join the next one. Default 2. */
  maxInFlight?: number;
  /** Called with each batch's size once it is in Redis (metrics). */
  onBatch?: (size: number) => void;
}

interface Waiting {
  job: BulkResultJob;
  resolve: () => void;
  reject: (err: unknown) => void;
}

export class ResultBatcher {
  private waiting: Waiting[] = [];
  private scheduled = false;
  private inFlight = 0;
  private readonly maxBatch: number;
  private readonly maxInFlight: number;

  constructor(
    private readonly addBulk: (jobs: BulkResultJob[]) => Promise<unknown>,
    private readonly opts: ResultBatchOptions = {},
  ) {
    this.maxBatch = opts.maxBatch ?? 128;
    this.maxInFlight = opts.maxInFlight ?? 2;
  }

  /** Resolves once `job` is in Redis; rejects with the batch's error when its batch failed. */
  add(job: BulkResultJob): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waiting.push({ job, resolve, reject });
      this.schedule();
    });
  }

  /**
   * After this turn's I/O callbacks, so every request handled in the same turn joins one batch. Only
   * flush() bounds the batches in flight: a flush with every place taken sends nothing, and each batch
   * that lands schedules the next.
   */
  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  private flush(): void {
    while (this.waiting.length && this.inFlight < this.maxInFlight) {
      const batch = this.waiting.splice(0, this.maxBatch);
      this.inFlight++;
      this.addBulk(batch.map((w) => w.job))
        .then(
          () => {
            for (const w of batch) w.resolve();
            this.opts.onBatch?.(batch.length);
          },
          (err: unknown) => {
            for (const w of batch) w.reject(err);
          },
        )
        .finally(() => {
          this.inFlight--;
          this.schedule();
        });
    }
  }
}
