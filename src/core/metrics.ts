// What a process counts, as the roles see it: the context carries one (made by ops/metrics.ts with
// prom-client and handed to createContext), so the ground floor names the counters without importing
// the room that serves them.
import type { Counter, Histogram, Registry } from 'prom-client';
import type { Outage } from './dependencies.ts';
import type { Queues } from './queues.ts';

/** One webhook receiver's counts, summed by the metrics on each scrape (webhook/refusals.ts keeps them). */
export interface ReceiverCounts {
  received: number;
  recorded: number;
  /** Redis round trips that recorded them (recorded / batches = webhooks per round trip). */
  batches: number;
  /** Refused webhooks by reason (webhook/refusals.ts's REFUSAL_CODES). */
  refused: Readonly<Record<string, number>>;
}

export interface Metrics {
  readonly registry: Registry;
  /** Submit jobs by what became of them (submitted, rejected, failed, unknown, canceled, retry, …). */
  readonly submits: Counter<'outcome'>;
  /** Result jobs by what became of them (completed, failed, duplicate, retry, …). */
  readonly stores: Counter<'outcome'>;
  /** Jobs that failed a try and will be tried again, by queue. */
  readonly retries: Counter<'queue'>;
  readonly reconcilePolls: Counter;
  readonly reconcileResubmits: Counter;
  /** Estimated cost of the fal requests submitted (the same estimate the spend guard counts). */
  readonly cost: Counter<'currency'>;
  readonly falQueueSeconds: Histogram;
  readonly falRunSeconds: Histogram;
  readonly storedLatencySeconds: Histogram;
  /** A submit job's outcome; a submission that reached fal adds its estimated cost. */
  countSubmit(outcome: string, costMicros?: number): void;
  /** Sums this receiver's counters into the webhook metrics from now on. */
  trackWebhook(counters: ReceiverCounts): void;
  /** Reports these queues' job counts on every scrape. */
  watchQueues(queues: Queues): void;
  /** portrait_batch_dependency_up reads the outages from here on every scrape. */
  watchDependencies(outages: () => Promise<Outage[]>): void;
  /**
   * A result stored for good: fal's own run time (payload.timings.inference, when fal gives it), the
   * rest of submit→result as queue time, and result received→stored.
   */
  observeStored(t: { submittedAt?: number; receivedAt: number; payload?: unknown; now?: number }): void;
}
