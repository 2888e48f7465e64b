// A run's own policy: written on the run when it is created and read inside the Lua transitions, so two
// workers with different environments judge one run the same way. A worker's env only sets the policy
// of the runs it creates.
import type { Config } from './config.ts';

export interface RunPolicy {
  endpoint: string;
  /** fal requests per row at most (MAX_ATTEMPTS). */
  maxAttempts: number;
  /** A request fal has started (seen IN_PROGRESS) and not finished this long after fails its row (ROW_DEADLINE_MS). */
  deadlineMs: number;
  /** A request fal has not been seen starting this long after its submission fails its row (QUEUE_DEADLINE_MS). */
  queueDeadlineMs: number;
  /** Failure threshold (FAILURE_THRESHOLD_MIN_ROWS / FAILURE_THRESHOLD_RATIO). */
  failureMinRows: number;
  failureRatio: number;
  /** Stop submitting once submitted work would pass this (currency units); null for no cap. */
  maxCost: number | null;
  /** PRICE_PER_MEGAPIXEL and CURRENCY when the run was created. */
  pricePerMegapixel: number;
  currency: string;
}

export function runPolicyFrom(cfg: Config, over: { maxCost?: number | null } = {}): RunPolicy {
  return {
    endpoint: cfg.FAL_ENDPOINT,
    maxAttempts: cfg.MAX_ATTEMPTS,
    deadlineMs: cfg.ROW_DEADLINE_MS,
    queueDeadlineMs: cfg.QUEUE_DEADLINE_MS,
    failureMinRows: cfg.FAILURE_THRESHOLD_MIN_ROWS,
    failureRatio: cfg.FAILURE_THRESHOLD_RATIO,
    maxCost: over.maxCost ?? null,
    pricePerMegapixel: cfg.PRICE_PER_MEGAPIXEL,
    currency: cfg.CURRENCY,
  };
}

/** Money in millionths of the currency unit (what the Lua transitions count in). */
export const toMicros = (amount: number): number => Math.round(amount * 1_000_000);
export const fromMicros = (micros: number): number => micros / 1_000_000;

/** The run hash fields that hold the policy. */
export function policyFields(p: RunPolicy): Record<string, string | number> {
  return {
    endpoint: p.endpoint,
    maxAttempts: p.maxAttempts,
    deadlineMs: p.deadlineMs,
    queueDeadlineMs: p.queueDeadlineMs,
    minRows: p.failureMinRows,
    ratio: p.failureRatio,
    maxCostMicros: p.maxCost === null ? '' : toMicros(p.maxCost),
    priceMicros: toMicros(p.pricePerMegapixel),
    currency: p.currency,
  };
}

export function policyOf(h: Record<string, string | undefined>): RunPolicy {
  return {
    endpoint: h.endpoint ?? '',
    maxAttempts: Number(h.maxAttempts ?? 3),
    deadlineMs: Number(h.deadlineMs ?? 7_200_000),
    queueDeadlineMs: Number(h.queueDeadlineMs ?? 21_600_000),
    failureMinRows: Number(h.minRows ?? 1000),
    failureRatio: Number(h.ratio ?? 1),
    maxCost: h.maxCostMicros ? Number(h.maxCostMicros) / 1_000_000 : null,
    pricePerMegapixel: Number(h.priceMicros ?? 0) / 1_000_000,
    currency: h.currency ?? 'USD',
  };
}
