// Every Redis key the service owns (BullMQ keeps its own under the `bull:` prefix).
export const keys = {
  /** Hash: run state, counters, cursor. */
  run: (runId: string) => `pb:run:${runId}`,
  /** Set of row keys that have row state and are not yet flushed to S3. */
  active: (runId: string) => `pb:run:${runId}:active`,
  /**
   * Bitmap by row ordinal (position among the manifest's data rows, not its line: blank lines cost no
   * bits): 1 once an enqueued row reached a terminal state (makes counting idempotent). Rejected rows
   * have no bit: they are never enqueued; their reasons are in the run's report parts in S3.
   */
  done: (runId: string) => `pb:run:${runId}:done`,
  /** String: the run's options (JSON), beside its hash so every field of the hash stays short (see createRun.lua). */
  runOptions: (runId: string) => `pb:run:${runId}:options`,
  /** Hash: manifest line -> why the row was canceled before it was ever enqueued (run canceled or stopped). */
  canceled: (runId: string) => `pb:run:${runId}:canceled`,
  /** Bitmap by manifest line: the lines a run is made of, when it is a subset of its manifest (a retry). */
  select: (runId: string) => `pb:run:${runId}:select`,
  /** Hash: one row in flight. */
  row: (runId: string, rowKey: string) => `pb:row:${runId}:${rowKey}`,
  /** Hash attempt -> request id: fal requests a webhook's token named for a row Redis had lost (after a restart without its last writes); claimSubmit takes them back. */
  adopt: (runId: string, rowKey: string) => `pb:adopt:${runId}:${rowKey}`,
  /** String `runId \n rowKey \n attempt`: which row a fal request belongs to. */
  request: (requestId: string) => `pb:req:${requestId}`,
  /** Sorted set of run ids by creation time. */
  runs: () => 'pb:runs',
  /** Set of run ids not yet finished (the reconciler sweeps these). */
  activeRuns: () => 'pb:runs:active',
  /** Hash: what this run observed of fal's timing (run time estimate, samples), for poll schedules. */
  timing: (runId: string) => `pb:run:${runId}:timing`,
  /** Hash: the latest run-time estimate any run learned of one fal endpoint; seeds the first looks of a new poll-mode run. */
  endpointTiming: (endpoint: string) => `pb:fal:timing:${endpoint}`,
  /** Sorted set `runId \n rowKey` -> since when: rows with a request on fal's side (FAL_CONCURRENCY bounds it). */
  falSlots: () => 'pb:fal:slots',
  /** String: fal storage URL of an S3-held face (bucket/key), uploaded once for every row that names it. */
  falFile: (bucket: string, key: string) => `pb:falfile:${bucket}/${key}`,
  /** Hash: why submissions are paused (auth failure), empty when running. */
  pause: () => 'pb:pause',
  /** String (JSON since/reason/by, with a TTL its prober refreshes): S3 or fal is unreachable (see core/dependencies.ts). */
  dependency: (dependency: string) => `pb:dependency:${dependency}`,
  /** String: written by a probe of Redis, so a Redis that refuses writes (MISCONF) counts as down. */
  redisProbe: () => 'pb:probe',
  /** String with a TTL: this row's fal-storage face was refused once by fal and re-uploaded (not again). */
  falFileRefused: (runId: string, rowKey: string) => `pb:falfile:refused:${runId}:${rowKey}`,
};

/** Terminal row states. */
export const TERMINAL = ['completed', 'failed', 'rejected', 'canceled'] as const;
export type TerminalState = (typeof TERMINAL)[number];
export type RowState = 'pending' | 'submitting' | 'submitted' | 'storing' | TerminalState;
export type RunState = 'running' | 'stopped' | 'finished' | 'canceled';

/** Seconds a request→row mapping outlives its row, so late duplicates are recognised cheaply (later ones
 * find no row and are dropped after a few looks). Bounded by time, not by manifest size. */
export const REQUEST_MAPPING_TTL_SECONDS = 3600;
