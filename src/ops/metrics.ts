// Prometheus metrics of one process (prom-client), served at /metrics of its admin listener. One
// registry per context: counters are bumped where the work already happens (one line each in the
// workers); webhook refusals are read from the receivers' own counters and queue depths from BullMQ,
// both when scraped.
import type * as PromClient from 'prom-client';
import { lazyPackage } from '../core/lazyPackage.ts';
import type { Metrics, ReceiverCounts } from '../core/metrics.ts';
import type { Queues } from '../core/queues.ts';
import { DEPENDENCIES, type Outage } from '../core/dependencies.ts';
import { REFUSAL_CODES } from '../webhook/refusals.ts';

/** BullMQ job states shown per queue. */
export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'prioritized', 'waiting-children', 'failed', 'completed', 'paused'] as const;

/** How long a scrape waits for BullMQ's counts: an unreachable Redis must not hang /metrics. */
const QUEUE_COUNT_TIMEOUT_MS = 1000;

/** prom-client, loaded when a context first uses its metrics (see core/lazyPackage.ts). */
const promClient = lazyPackage<typeof PromClient>('prom-client');

const SECONDS_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600];

export function createMetrics(currency = 'USD'): Metrics {
  const { Counter, Gauge, Histogram, Registry } = promClient();
  // Process metrics (CPU, memory, event loop) are added by the admin listener that serves them.
  const registry = new Registry();
  const webhooks: ReceiverCounts[] = [];
  const queueSets: Queues[] = [];
  let outages: (() => Promise<Outage[]>) | undefined;
  const reg = [registry];

  const submits = new Counter({ name: 'portrait_batch_submits_total', help: 'Submit jobs by outcome', labelNames: ['outcome'] as const, registers: reg });
  const stores = new Counter({ name: 'portrait_batch_stores_total', help: 'Result (store) jobs by outcome', labelNames: ['outcome'] as const, registers: reg });
  const retries = new Counter({ name: 'portrait_batch_job_retries_total', help: 'Jobs that failed a try and will be tried again, by queue', labelNames: ['queue'] as const, registers: reg });
  const reconcilePolls = new Counter({ name: 'portrait_batch_reconciler_polls_total', help: 'fal status polls made by the reconciler', registers: reg });
  const reconcileResubmits = new Counter({ name: 'portrait_batch_reconciler_resubmits_total', help: 'Rows the reconciler resubmitted as a new attempt', registers: reg });
  const cost = new Counter({ name: 'portrait_batch_cost_total', help: 'Estimated cost of the fal requests submitted', labelNames: ['currency'] as const, registers: reg });
  const falQueueSeconds = new Histogram({ name: 'portrait_batch_fal_queue_seconds', help: 'Submit to result, less fal run time: time in fal’s queue and delivery', buckets: SECONDS_BUCKETS, registers: reg });
  const falRunSeconds = new Histogram({ name: 'portrait_batch_fal_run_seconds', help: 'fal’s own inference time of a request (payload timings)', buckets: SECONDS_BUCKETS, registers: reg });
  const storedLatencySeconds = new Histogram({ name: 'portrait_batch_stored_latency_seconds', help: 'Result received (webhook or poll) to images stored in S3', buckets: SECONDS_BUCKETS, registers: reg });

  const sum = (pick: (c: ReceiverCounts) => number) => webhooks.reduce((n, c) => n + pick(c), 0);
  new Counter({
    name: 'portrait_batch_webhooks_received_total',
    help: 'Webhook deliveries received',
    registers: reg,
    collect() {
      this.reset();
      this.inc(sum((c) => c.received));
    },
  });
  new Counter({
    name: 'portrait_batch_webhooks_verified_total',
    help: 'Webhooks verified and recorded',
    registers: reg,
    collect() {
      this.reset();
      this.inc(sum((c) => c.recorded));
    },
  });
  new Counter({
    name: 'portrait_batch_webhook_record_batches_total',
    help: 'Redis round trips that recorded verified webhooks (several webhooks arriving together share one)',
    registers: reg,
    collect() {
      this.reset();
      this.inc(sum((c) => c.batches));
    },
  });
  new Counter({
    name: 'portrait_batch_webhooks_refused_total',
    help: 'Webhooks refused, by reason',
    labelNames: ['reason'] as const,
    registers: reg,
    collect() {
      this.reset();
      for (const reason of REFUSAL_CODES) this.inc({ reason }, sum((c) => c.refused[reason] ?? 0));
    },
  });
  new Gauge({
    name: 'portrait_batch_queue_jobs',
    help: 'BullMQ jobs by queue and state (read when scraped)',
    labelNames: ['queue', 'state'] as const,
    registers: reg,
    async collect() {
      this.reset();
      const queues = queueSets.flatMap((q) => [q.produce, q.submit, q.results, q.control]);
      const counts = await withTimeout(Promise.all(queues.map((q) => q.getJobCounts(...QUEUE_STATES))), QUEUE_COUNT_TIMEOUT_MS);
      if (!counts) return; // Redis did not answer in time: no depths this scrape (see /readyz)
      queues.forEach((q, i) => {
        for (const state of QUEUE_STATES) this.set({ queue: q.name, state }, counts[i]![state] ?? 0);
      });
    },
  });

  new Gauge({
    name: 'portrait_batch_dependency_up',
    help: 'Whether a dependency (redis, s3, fal) is reachable, as this process and the outages recorded in Redis say (0 while down)',
    labelNames: ['dependency'] as const,
    registers: reg,
    async collect() {
      const down = new Set((outages ? ((await withTimeout(outages(), QUEUE_COUNT_TIMEOUT_MS)) ?? []) : []).map((o) => o.dependency));
      for (const dependency of DEPENDENCIES) this.set({ dependency }, down.has(dependency) ? 0 : 1);
    },
  });

  return {
    registry,
    submits,
    stores,
    retries,
    reconcilePolls,
    reconcileResubmits,
    cost,
    falQueueSeconds,
    falRunSeconds,
    storedLatencySeconds,
    countSubmit(outcome, costMicros = 0) {
      submits.inc({ outcome });
      if (outcome === 'submitted' && costMicros > 0) cost.inc({ currency }, costMicros / 1e6);
    },
    trackWebhook: (c) => void webhooks.push(c),
    watchQueues: (q) => void queueSets.push(q),
    watchDependencies: (o) => void (outages = o),
    observeStored({ submittedAt, receivedAt, payload, now = Date.now() }) {
      storedLatencySeconds.observe(Math.max(0, (now - receivedAt) / 1000));
      const inference = (payload as { timings?: { inference?: unknown } } | undefined)?.timings?.inference;
      const run = typeof inference === 'number' && Number.isFinite(inference) && inference >= 0 ? inference : undefined;
      if (run !== undefined) falRunSeconds.observe(run);
      if (submittedAt) falQueueSeconds.observe(Math.max(0, (receivedAt - submittedAt) / 1000 - (run ?? 0)));
    },
  };
}

export async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  try {
    return await Promise.race([p.catch(() => undefined), timeout]);
  } finally {
    clearTimeout(timer);
  }
}
