// Fault options of the emulator and the seeded random sources that decide them, so a run with the
// same seed makes the same decisions. Each concern draws from its own stream: file GETs, say, do
// not shift which submits get refused.

export interface MsRange {
  min: number;
  max: number;
}

export interface EmulatorFaults {
  /** Share of submits answered 429 (Retry-After: 1) or 500/503, half each; nothing is created. */
  submitErrorRate?: number;
  /** Share of finished requests whose webhook is never sent. */
  webhookDropRate?: number;
  /** Share of webhooks sent twice. */
  webhookDuplicateRate?: number;
  /** Extra random delay before a webhook is sent (reorders deliveries). */
  webhookDelayMs?: MsRange;
  /** Share of requests that fail in the model (500, ERROR webhook). */
  modelErrorRate?: number;
  /** Share of accepted requests fal forgets: status/result 404, no webhook. */
  lostRequestRate?: number;
  /** Share of GETs of /files answered 500 (decided per GET). */
  imageDownloadFailureRate?: number;
  /**
   * Share of valid submits accepted (queued, charged, their webhook sent as usual) whose answer is
   * then lost: the connection is destroyed instead of the 200, so the caller cannot tell whether fal
   * took the request.
   */
  ambiguousSubmitRate?: number;
  /**
   * Share of requests that fail with each of fal's error types (errors.ts: request errors such as
   * runner_server_error, model errors such as image_load_error or content_policy_violation), with fal's
   * status, body shape and headers. One draw per request decides among them.
   */
  errorRates?: Partial<Record<string, number>>;
}

/** mulberry32: small, fast, seedable; returns floats in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** An integer in [min, max] (0 without a range). */
export function between(random: () => number, range: MsRange | undefined): number {
  if (!range) return 0;
  const min = Math.max(0, range.min);
  return Math.round(min + random() * Math.max(0, range.max - min));
}

/** True with probability `rate`; always draws, so decisions stay aligned whatever the rates. */
export function chance(random: () => number, rate: number | undefined): boolean {
  return random() < (rate ?? 0);
}

export type StreamName = 'submit' | 'lost' | 'model' | 'latency' | 'seed' | 'webhook' | 'files' | 'ambiguous' | 'errors';

/** One independent seeded stream per concern, all derived from one seed. */
export function randomStreams(seed: number): Record<StreamName, () => number> {
  // New streams go at the end: a stream's seed depends on its position.
  const names: StreamName[] = ['submit', 'lost', 'model', 'latency', 'seed', 'webhook', 'files', 'ambiguous', 'errors'];
  return Object.fromEntries(names.map((name, i) => [name, seededRandom(Math.imul(seed >>> 0, 0x9e3779b1) ^ ((i + 1) * 0x85ebca6b))])) as Record<
    StreamName,
    () => number
  >;
}
