// fal's webhook public keys, from a JWKS URL: cached (24 h by default), shared by concurrent callers,
// re-fetched when a signature matches no cached key — but never more often than minRefreshIntervalMs,
// so a flood of forged webhooks cannot turn into a flood of JWKS fetches.
import { createPublicKey, type KeyObject } from 'node:crypto';

export interface JwksOptions {
  ttlMs?: number;
  minRefreshIntervalMs?: number;
  timeoutMs?: number;
  fetchImpl?: typeof fetch;
}

interface Jwk {
  kty?: string;
  crv?: string;
  x?: string;
}

export class JwksCache {
  private cached: KeyObject[] = [];
  private fetchedAt = 0;
  private inFlight?: Promise<KeyObject[]>;
  private readonly ttlMs: number;
  private readonly minRefreshIntervalMs: number;
  private readonly timeoutMs: number;
  private readonly fetchImpl: typeof fetch;
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
  }

  async keys(): Promise<KeyObject[]> {
    if (this.cached.length && Date.now() - this.fetchedAt < this.ttlMs) return this.cached;
    return this.load();
  }

  /** Fetch again now, unless a fetch happened within the minimum interval. */
  async refresh(): Promise<KeyObject[]> {
    if (Date.now() - this.fetchedAt < this.minRefreshIntervalMs) return this.cached;
    return this.load();
  }

  private load(): Promise<KeyObject[]> {
    this.inFlight ??= this.fetchKeys().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  private async fetchKeys(): Promise<KeyObject[]> {
    this.fetches++;
    try {
      const res = await this.fetchImpl(this.url, { signal: AbortSignal.timeout(this.timeoutMs) });
      if (!res.ok) throw new Error(`JWKS ${this.url} answered ${res.status}`);
      const body = (await res.json()) as { keys?: Jwk[] };
      const keys = (body.keys ?? [])
        .filter((k) => k.kty === 'OKP' && k.crv === 'Ed25519' && typeof k.x === 'string')
        .map((k) => createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: k.x! }, format: 'jwk' }));
      if (!keys.length) throw new Error(`JWKS ${this.url} holds no Ed25519 keys`);
      this.cached = keys;
      this.fetchedAt = Date.now();
      return keys;
    } catch (err) {
      // Keep serving the keys we have; without any, nothing can be verified.
      this.fetchedAt = Date.now();
      if (this.cached.length) return this.cached;
      throw new Error(`cannot load fal's webhook keys: ${(err as Error).message}`);
    }
  }
}
