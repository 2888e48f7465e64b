// Fault options of the emulator and the seeded random source that decides them (reproducible runs).
export interface EmulatorFaults {
  /** Share of submits answered 429 (Retry-After: 1) or 500/503, half each; nothing is created. */
  submitErrorRate?: number;
  /** Share of finished requests whose webhook is never sent. */
  webhookDropRate?: number;
  /** Share of webhooks sent twice. */
  webhookDuplicateRate?: number;
  /** Extra random delay before a webhook is sent (reorders deliveries). */
  webhookDelayMs?: { min: number; max: number };
  /** Share of requests that fail in the model (500, ERROR webhook). */
  modelErrorRate?: number;
  /** Share of accepted requests fal forgets: status/result 404, no webhook. */
  lostRequestRate?: number;
  /** Share of GETs of /files answered 500. */
  imageDownloadFailureRate?: number;
}

/** mulberry32: small, fast, seedable. */
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

export function between(random: () => number, range: { min: number; max: number } | undefined): number {
  if (!range) return 0;
  return Math.round(range.min + random() * Math.max(0, range.max - range.min));
}
