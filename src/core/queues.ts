// BullMQ queues and their job payloads. Job ids are deterministic, so re-adding the same work
// (a resumed producer, a duplicate webhook, a reconciler sweep) is absorbed by BullMQ.
import { Queue, type ConnectionOptions } from 'bullmq';
import type { Config } from './config.ts';
import type { RowData } from './rowState.ts';

export const QUEUE_NAMES = { submit: 'pb-submit', results: 'pb-results', control: 'pb-control' } as const;

export interface SubmitJob {
  runId: string;
  key: string;
  line: number;
  row: RowData;
}

export interface ResultJob {
  requestId: string;
  status: 'OK' | 'ERROR';
  payload?: unknown;
  error?: string | null;
  /** Row identity from our webhook URL: lets a result that beats the submit response find its row. */
  hint?: { runId: string; key: string; attempt: number };
  source: 'webhook' | 'poll';
  receivedAt: number;
}

export interface FinalizeJob {
  runId: string;
}

export interface Queues {
  submit: Queue<SubmitJob>;
  results: Queue<ResultJob>;
  control: Queue<FinalizeJob | Record<string, never>>;
  close(): Promise<void>;
}

export function createQueues(connection: ConnectionOptions): Queues {
  const submit = new Queue<SubmitJob>(QUEUE_NAMES.submit, { connection });
  const results = new Queue<ResultJob>(QUEUE_NAMES.results, { connection });
  const control = new Queue<FinalizeJob | Record<string, never>>(QUEUE_NAMES.control, { connection });
  return {
    submit,
    results,
    control,
    async close() {
      await Promise.all([submit.close(), results.close(), control.close()]);
    },
  };
}

/**
 * Job ids: one submit job per row and generation, one result job per fal request and status. BullMQ
 * forbids ':' in ids; '~' appears in no run id, row key or request id, so ids cannot collide.
 */
export const jobIds = {
  submit: (runId: string, key: string, generation = 0) => `s~${runId}~${key}~${generation}`,
  result: (requestId: string, status: string) => `r~${requestId}~${status}`,
  finalize: (runId: string) => `f~${runId}`,
};

export function submitJobOptions(tries: number) {
  return {
    attempts: tries,
    backoff: { type: 'fal' }, // submitBackoff: exponential, jittered, honours Retry-After
    removeOnComplete: true,
    removeOnFail: { age: 7 * 86400 },
  };
}

/** The store retry policy, in one place: STORE_MAX_TRIES tries, exponential backoff with jitter. */
export function storeRetryPolicy(cfg: Pick<Config, 'STORE_MAX_TRIES' | 'STORE_RETRY_DELAY_MS'>) {
  return {
    attempts: cfg.STORE_MAX_TRIES,
    backoff: { type: 'exponential', delay: cfg.STORE_RETRY_DELAY_MS, jitter: 0.5 },
  };
}

export function resultJobOptions(cfg: Pick<Config, 'STORE_MAX_TRIES' | 'STORE_RETRY_DELAY_MS'>, requestId: string, status: string) {
  return {
    jobId: jobIds.result(requestId, status),
    ...storeRetryPolicy(cfg),
    // Kept an hour so duplicate deliveries of the same result are absorbed by the job id.
    removeOnComplete: { age: 3600, count: 1000 },
    removeOnFail: { age: 7 * 86400 },
  };
}
