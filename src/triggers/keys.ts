// The Redis keys the triggers own (beside the run and row keys in src/core/keys.ts).
export const triggerKeys = {
  /** Hash: a schedule's current/last run (runId, tick, firedAt), skips and last error. */
  schedule: (name: string) => `pb:schedule:${name}`,
  /** List, newest first, capped: what each tick of a schedule did (JSON: tick, outcome, runId, reason). */
  scheduleTicks: (name: string) => `pb:schedule:${name}:ticks`,
  /** String: who is starting the run of a dropped object (a scheduler's token, with a lease), or `started`. */
  dropClaim: (runId: string) => `pb:drop:claim:${runId}`,
};

/** Entries kept in a schedule's tick list. */
export const TICKS_KEPT = 100;
