// fal's webhook public keys, from a JWKS URL: cached (24 h by default), shared by concurrent callers,
// re-fetched when a signature matches no cached key — but never more often than minRefreshIntervalMs
// (failed attempts count too), so a flood of forged webhooks cannot turn into a flood of JWKS fetches.
import { createPublicKey, type KeyObject } from 'node:crypto';

export interface JwksOptions {
  /** The clock (ms): tests move it instead of waiting out the intervals. */
  now?: () => number;
  /** How long fetched keys are used before keys() fetches again. Default 24 h. */
  ttlMs?: number;
  /** Never fetch more often than this (refresh() and retries after a failure). Default 30 s. */
  minRefreshIntervalMs?: number;
  /** fetch implementation (tests). Default: global fetch. */
  fetchImpl?: typeof fetch;
  /** Abort one fetch (headers and body) after this long. Default 10 s. */
  timeoutMs?: number;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The OKP/Ed25519 public keys of a JWKS document; any other key (RSA, EC, X25519, malformed) is ignored. */
export function ed25519KeysOf(doc: unknown): KeyObject[] {
  if (!isObject(doc) || !Array.isArray(doc.keys)) throw new Error('not a JWKS document (no "keys" array)');
  const keys: KeyObject[] = [];
  for (const jwk of doc.keys) {
    if (!isObject(jwk) || jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') continue;
    try {
      // Only the public part is ever read, even if a misconfigured JWKS also carried `d`.
      keys.push(createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' }));
    } catch {
      // a malformed key is skipped; the others still count
    }
  }
  return keys;
}

export class JwksCache {
  private cached: KeyObject[] = [];
  /** Last successful fetch (ms). */
  private fetchedAt = Number.NEGATIVE_INFINITY;
  /** Last fetch attempt, successful or not (ms): the basis of the rate limit. */
  private attemptedAt = Number.NEGATIVE_INFINITY;
  private lastError: Error | undefined;
  private inFlight: Promise<KeyObject[]> | undefined;
  private readonly ttlMs: number;
  private readonly minRefreshIntervalMs: number;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;
  private readonly now: () => number;
  /** How many times the JWKS was fetched (for operators and tests). */
  fetches = 0;

  constructor(
    readonly url: string,
    opts: JwksOptions = {},
  ) {
    this.ttlMs = opts.ttlMs ?? 24 * 3600_000;
    this.minRefreshIntervalMs = opts.minRefreshIntervalMs ?? 30_000;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.fetchImpl = opts.fetchImpl ?? fetch;
    this.now = opts.now ?? Date.now;
  }

  /** The current keys: cached, fetched on first use or once the ttl has passed. Throws when no key was ever loaded. */
  async keys(): Promise<KeyObject[]> {
    if (this.cached.length && this.now() - this.fetchedAt < this.ttlMs) return this.cached;
    return this.fetchUnlessRecent();
  }

  /** Fetch again now (a key may have been rotated), unless a fetch was attempted within minRefreshIntervalMs; returns the current keys. */
  async refresh(): Promise<KeyObject[]> {
    return this.fetchUnlessRecent();
  }

  private fetchUnlessRecent(): Promise<KeyObject[]> {
    if (this.inFlight) return this.inFlight;
    if (this.now() - this.attemptedAt < this.minRefreshIntervalMs) return Promise.resolve().then(() => this.current());
    this.attemptedAt = this.now();
    this.fetches++;
    const load = this.fetchKeys().then(
      (keys) => {
        this.cached = keys;
        this.fetchedAt = this.now();
        this.lastError = undefined;
        return keys;
      },
      (err: unknown) => {
        // Keep serving the keys we have; without any, nothing can be verified.
        this.lastError = err instanceof Error ? err : new Error(String(err));
        return this.current();
      },
    );
    this.inFlight = load.finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private current(): KeyObject[] {
    if (this.cached.length) return this.cached;
    throw new Error(`cannot load fal's webhook keys from ${this.url}: ${this.lastError?.message ?? 'no key loaded yet'}`);
  }

  private async fetchKeys(): Promise<KeyObject[]> {
    const res = await this.fetchImpl(this.url, { headers: { accept: 'application/json' }, signal: AbortSignal.timeout(this.timeoutMs) });
    if (!res.ok) throw new Error(`JWKS answered HTTP ${res.status}`);
    let doc: unknown;
    try {
      doc = await res.json();
    } catch (err) {
      throw new Error(`JWKS is not JSON (${(err as Error).message})`);
    }
    const keys = ed25519KeysOf(doc);
    if (!keys.length) throw new Error('JWKS holds no Ed25519 key');
    return keys;
  }
}
