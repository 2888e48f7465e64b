// BullMQ queues and their job payloads. Job ids are deterministic, so re-adding the same work
// (a resumed producer, a duplicate webhook, a reconciler sweep) is absorbed by BullMQ.
import type * as BullMQ from 'bullmq';
import type { ConnectionOptions, Queue } from 'bullmq';
import type { FalErrorInfo } from './falErrors.ts';
import { lazyPackage } from './lazyPackage.ts';
import { jobOptions, type Policy } from './policy.ts';
import type { Row, RowData } from './rowState.ts';

/** BullMQ, loaded with the first queues (see lazyPackage.ts): the helpers and job ids below need none of it. */
const bullmq = lazyPackage<typeof BullMQ>('bullmq');

export const QUEUE_NAMES = { submit: 'pb-submit', results: 'pb-results', control: 'pb-control', produce: 'pb-produce', poll: 'pb-poll' } as const;

export interface SubmitJob {
  runId: string;
  key: string;
  line: number;
  /** The row's position among the manifest's data rows: its done bit (absent on jobs queued before it was kept). */
  ordinal?: number;
  row: RowData;
  /** Estimated cost of one fal request for this row, in millionths of the run's currency. */
  costMicros?: number;
  /** When this submission first failed for a reason worth waiting out (SUBMIT_RETRY_WINDOW counts from it). */
  retryingSince?: number;
}

/** Stream a run's manifest through its window (any worker; resumes from the run's cursor). */
export interface ProduceJob {
  runId: string;
}

export interface ResultJob {
  requestId: string;
  status: 'OK' | 'ERROR';
  payload?: unknown;
  /** S3 key of the payload when it was too large to keep in Redis (sync_mode images inline); `payload` is then absent. */
  payloadKey?: string;
  error?: string | null;
  /** fal's error type and retry headers, when a poll read them from the result call (a webhook's are in its payload). */
  falError?: FalErrorInfo;
  /** Row identity from our webhook URL: lets a result that beats the submit response find its row. */
  hint?: { runId: string; key: string; attempt: number };
  source: 'webhook' | 'poll';
  receivedAt: number;
}

/** Poll mode: look at one fal request (scheduled for when it should be done). */
export interface PollJob {
  runId: string;
  key: string;
  requestId: string;
  /** fal's queue_position at the last look (or the submit answer). */
  queuePosition?: number;
}

export interface FinalizeJob {
  runId: string;
}

export interface Queues {
  submit: Queue<SubmitJob>;
  results: Queue<ResultJob>;
  control: Queue<FinalizeJob | Record<string, never>>;
  produce: Queue<ProduceJob>;
  poll: Queue<PollJob>;
  close(): Promise<void>;
}

export function createQueues(connection: ConnectionOptions): Queues {
  const { Queue } = bullmq();
  const submit = new Queue<SubmitJob>(QUEUE_NAMES.submit, { connection });
  const results = new Queue<ResultJob>(QUEUE_NAMES.results, { connection });
  const control = new Queue<FinalizeJob | Record<string, never>>(QUEUE_NAMES.control, { connection });
  const produce = new Queue<ProduceJob>(QUEUE_NAMES.produce, { connection });
  const poll = new Queue<PollJob>(QUEUE_NAMES.poll, { connection });
  return {
    submit,
    results,
    control,
    produce,
    poll,
    async close() {
      await Promise.all([submit.close(), results.close(), control.close(), produce.close(), poll.close()]);
    },
  };
}

/**
 * Job ids: one submit job per row and generation, one result job per fal request and status. BullMQ
 * forbids ':' in ids; '~' appears in no run id or row key, so ids cannot collide. Request ids are fal's
 * (any text): percent-encoded, which removes ':' and '~' and keeps distinct ids distinct.
 */
export const jobIds = {
  submit: (runId: string, key: string, generation = 0) => `s~${runId}~${key}~${generation}`,
  result: (requestId: string, status: string) => `r~${encodeURIComponent(requestId).replace(/~/g, '%7E')}~${status}`,
  finalize: (runId: string) => `f~${runId}`,
  produce: (runId: string) => `p~${runId}`,
  /** One poll job per request and poll number (a sweep re-adding a live one is absorbed). */
  poll: (requestId: string, n: number) => `q~${encodeURIComponent(requestId).replace(/~/g, '%7E')}~${n}`,
};

export function submitJobOptions(policy: Policy) {
  return jobOptions(policy.submit, 'submit');
}

export function resultJobOptions(policy: Policy, requestId: string, status: string) {
  const keep = policy.results.keepCompleted;
  // Kept a while so duplicate deliveries of the same result are absorbed by the job id.
  const opts = jobOptions(policy.results, 'results', { age: keep.ageSeconds, count: keep.count });
  // Failed ones are bounded by count too: they must not pile up in Redis whatever arrives.
  return { jobId: jobIds.result(requestId, status), ...opts, removeOnFail: { ...opts.removeOnFail, count: keep.count } };
}

/** What the queue helpers below need of a context (core/context.ts builds it; this file cannot import it back). */
interface QueueUser {
  queues: Queues;
  policy: Policy;
}

/** A run's `produce` job: any worker streams its manifest, from the run's resume cursor. */
export async function enqueueProduce(ctx: QueueUser, runId: string): Promise<void> {
  await ctx.queues.produce.add('produce', { runId }, { jobId: jobIds.produce(runId), ...jobOptions(ctx.policy.produce, 'produce') });
}

/** A run's one finalize job (its id absorbs every worker that saw the last row end). */
export async function enqueueFinalize(ctx: QueueUser, runId: string): Promise<void> {
  await ctx.queues.control.add(
    'finalize',
    { runId },
    // Removed once done: a finished run keeps nothing in Redis but its own keys (until RUN_RETENTION). A
    // late duplicate trigger runs again harmlessly: the report is written once (finishedAt) and the
    // notice keeps its own job id.
    { jobId: jobIds.finalize(runId), ...jobOptions(ctx.policy.finalize, 'finalize') },
  );
}

/** A row's submit job for one generation. `delayMs`: a new attempt after fal failed the last one waits its backoff. */
export async function addSubmitJob(ctx: QueueUser, row: Row, generation: number, delayMs = 0): Promise<void> {
  await ctx.queues.submit.add(
    'submit',
    { runId: row.runId, key: row.key, line: row.line, ordinal: row.ordinal, row: row.data, costMicros: row.cost },
    { jobId: jobIds.submit(row.runId, row.key, generation), ...submitJobOptions(ctx.policy), ...(delayMs > 0 ? { delay: Math.round(delayMs) } : {}) },
  );
}
