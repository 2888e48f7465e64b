// The names of `portrait-batch chaos --faults` (what each does: src/chaos.ts and src/local/stackFaults.ts).
// A module of its own so the CLI checks its arguments without loading the chaos run.
export const FAULT_NAMES = ['kill', 'redis-kill', 'redis-crash', 'redis-stall', 's3-outage', 'fal-outage', 'fal-restart', 'receiver-outage'] as const;
export type FaultName = (typeof FAULT_NAMES)[number];
