// What the service depends on — Redis, S3 and fal — as up or down, seen by this process. An outage is
// said once: one warning when a dependency becomes unreachable, one when it is back (with how long it
// lasted), a reminder at most every `repeatMs` in between, never a line per failed call. While one is
// down, a single probe per process looks for its return with backoff; the queues it affects are paused
// globally meanwhile (see outagePauses) and resume by themselves when the probe succeeds.
//
// Redis is the one place every process sees: an outage of S3 or fal is also written there (a small
// key with a TTL the probing process keeps fresh), so `status`, the dashboard and /readyz of every
// process show it, and only the process that wrote it first says so at warning level. An outage of
// Redis itself can only be known per process (its /readyz and its metric say it) and cannot be agreed
// on through Redis, so processes agree by role (sayRedisOutages): the workers, whose work stops, say
// it at once; a process without workers (a webhook receiver, the scheduler) says it at info, and at
// warning level only once it has lasted `redisWarnAfterMs` (fal delivers a refused webhook again, a
// schedule fires late), so a deployment or a host without workers still warns; the receiver processes
// of WEBHOOK_PROCESSES leave it to their primary. One outage of a stack is one warning and one recovery.
import type { Redis } from 'ioredis';
import { keys } from './keys.ts';
import type { Logger } from './logger.ts';
import { backoffDelay, type Backoff } from './policy.ts';

export const DEPENDENCIES = ['redis', 's3', 'fal'] as const;
export type Dependency = (typeof DEPENDENCIES)[number];

/** How each dependency is named to an operator. */
export const DEPENDENCY_NAMES: Record<Dependency, string> = { redis: 'Redis', s3: 'S3', fal: 'fal' };

export interface Outage {
  dependency: Dependency;
  /** When it was first seen unreachable (ms since epoch). */
  since: number;
  reason: string;
  /** The process that first saw it (only for outages read back from Redis). */
  by?: string;
}

export interface DependencyPolicy {
  /** Waits between two probes of a dependency that is down. */
  probe: Backoff;
  /** How long one probe may take before it counts as a failure. */
  probeTimeoutMs: number;
  /** While an outage lasts, a reminder at most this often. */
  repeatMs: number;
  /** Repeats of one other (unclassified) error are logged at most this often, with a count. */
  errorRepeatMs: number;
  /** A process without workers says a Redis outage at warning level once it lasts this long (see sayRedisOutages). */
  redisWarnAfterMs: number;
}

/** A dependency's failure wrapped so callers can tell it from the row's own failures (a bad image, a refused input). */
export class DependencyError extends Error {
  override name = 'DependencyError';
  constructor(
    readonly dependency: Dependency,
    override readonly cause: unknown,
    /** The failure belongs to an outage already said, which may be over by now: wait, do not say it again. */
    readonly alreadySaid = false,
  ) {
    super(`${DEPENDENCY_NAMES[dependency]} unreachable: ${describeFailure(cause)}`);
  }
}

/** Redis answers (and ioredis errors) that mean "Redis cannot do our work now", not "this command is wrong". */
const REDIS_REFUSING = /MISCONF|READONLY|LOADING|OOM command not allowed|MASTERDOWN|Connection is closed|Command timed out|Stream isn't writeable/i;
/** Network failures: Redis's only when the error came from a Redis connection (see `fromConnection`). */
const NETWORK = /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EPIPE/i;

/**
 * Whether an error says Redis is unreachable or refusing writes. `fromConnection`: the error came from
 * a Redis connection itself (ioredis's or a BullMQ worker's `error` event), so a refused connection is
 * Redis's; from other work (a job, a sweep) it could be S3's or fal's, and only Redis's own answers count.
 */
export function isRedisOutage(err: unknown, fromConnection = false): boolean {
  const e = err as { message?: unknown; code?: unknown };
  const text = `${String(e?.message ?? '')} ${typeof e?.code === 'string' ? e.code : ''}`;
  return REDIS_REFUSING.test(text) || (fromConnection && NETWORK.test(text));
}

/**
 * Whether an S3 call failed because S3 is not there or not working (no HTTP answer, a timeout, a 5xx),
 * as opposed to an answer about this request (404 NoSuchKey, 403 on one object, 400).
 */
export function isS3Outage(err: unknown): boolean {
  if (err instanceof DependencyError) return err.dependency === 's3';
  const e = err as { $metadata?: { httpStatusCode?: number }; name?: string; $fault?: string };
  const status = e?.$metadata?.httpStatusCode;
  if (status === undefined) return true; // no HTTP answer: refused, reset, timed out
  return status >= 500 || status === 429;
}

/** An error of an S3 call, as a DependencyError when it says S3 is down (others pass through as they are). */
export function asS3Failure(err: unknown): unknown {
  return !(err instanceof DependencyError) && isS3Outage(err) ? new DependencyError('s3', err) : err;
}

/**
 * The dependency an error says is down: a DependencyError's, Redis refusing or unreachable, fal not
 * reached at all (connection refused, no answer: FalTransientError without a status, FalAmbiguousError).
 * A fal answer (429, 5xx, 4xx) is not an outage: fal is there and said something about this request.
 */
export function outageOf(err: unknown): Dependency | undefined {
  if (err instanceof DependencyError) return err.dependency;
  const e = err as { name?: unknown; status?: unknown; message?: unknown };
  // createFal's fetch wrapper: "fal unreachable (ECONNREFUSED)" when nothing was sent, FalAmbiguousError when no answer came.
  if (e?.name === 'FalTransientError' && e.status === undefined && /^fal unreachable/.test(String(e.message))) return 'fal';
  if (e?.name === 'FalAmbiguousError' && /^fal call interrupted/.test(String(e.message))) return 'fal';
  if (isRedisOutage(err)) return 'redis';
  return undefined;
}

/** A short reason for an error: its code or first line. */
export function describeFailure(err: unknown): string {
  if (err instanceof DependencyError) return describeFailure(err.cause);
  if (typeof err === 'string') return err.slice(0, 200);
  const e = err as { code?: unknown; message?: unknown; name?: unknown; $metadata?: { httpStatusCode?: number } };
  const status = e?.$metadata?.httpStatusCode;
  const msg = String(e?.message ?? e?.name ?? err).split('\n')[0]!;
  const code = typeof e?.code === 'string' && !msg.includes(e.code) ? `${e.code}: ` : '';
  return `${code}${status ? `HTTP ${status}: ` : ''}${msg}`.slice(0, 200);
}

/** "1h02m", "3m05s", "12s". */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${s}s`;
}

const outageKey = (dep: Dependency) => keys.dependency(dep);

type Probe = (signal: AbortSignal) => Promise<unknown>;

export interface DependencyHooks {
  /** Called once when this process sees `dep` go down, and once when it is back. */
  onDown?(dep: Dependency, outage: Outage): Promise<void> | void;
  onUp?(dep: Dependency, outage: Outage): Promise<void> | void;
}

interface LocalState extends Outage {
  /** This process wrote the shared record (or, for Redis, its role says it): it speaks at warning level. */
  reporter: boolean;
  probes: number;
  lastSaid: number;
  timer?: ReturnType<typeof setTimeout>;
  /** A Redis outage said at info so far: when it lasts, the warning (sayRedisOutages). */
  warnTimer?: ReturnType<typeof setTimeout>;
}

/** How this process says a Redis outage (sayRedisOutages). */
export interface RedisOutageVoice {
  /** At warning level once the outage lasts this long (0: at once; Infinity: never, another process says it). */
  afterMs: number;
  /** What the outage stops here, for the lines (default: the workers'). */
  affects?: string;
}

export class Dependencies {
  private readonly state = new Map<Dependency, LocalState>();
  private readonly hooks: DependencyHooks[] = [];
  private readonly repeats = new Map<string, { at: number; suppressed: number }>();
  /** When the last outage this process saw ended. */
  private lastRecoveryAt = 0;
  /** Set by the process's role; unset, it says it at once, as the workers do (a library user's process, the embedded stack). */
  private redisVoice?: RedisOutageVoice;
  private closed = false;

  constructor(
    private readonly opts: {
      redis: Redis;
      logger: Logger;
      policy: DependencyPolicy;
      probes: Record<Dependency, Probe>;
      /** Where each dependency is, for messages (e.g. "S3_ENDPOINT 127.0.0.1:9000"). */
      where: Record<Dependency, string>;
      /** Names this process in shared records. */
      processName: string;
      now?: () => number;
    },
  ) {}

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  onChange(hooks: DependencyHooks): void {
    this.hooks.push(hooks);
  }

  /**
   * How this process says an outage of Redis: its role decides (see the file header). A process whose
   * workers call this with 0 says it at once whatever else it runs (the smallest wait wins).
   */
  sayRedisOutages(voice: RedisOutageVoice): void {
    if (!this.redisVoice || voice.afterMs < this.redisVoice.afterMs) this.redisVoice = voice;
  }

  isDown(dep: Dependency): boolean {
    return this.state.has(dep);
  }

  /**
   * An outage is going on here, or ended less than `withinMs` ago: errors that follow from it (a job
   * lock not renewed while Redis stalled) belong to its one warning, not lines of their own.
   */
  inOutageAftermath(withinMs = this.opts.policy.errorRepeatMs): boolean {
    return this.state.size > 0 || this.now() - this.lastRecoveryAt < withinMs;
  }

  /** The outages this process sees itself. */
  local(): Outage[] {
    return [...this.state.values()].map(({ dependency, since, reason }) => ({ dependency, since, reason }));
  }

  /**
   * Every outage known here: this process's own, and those other processes wrote to Redis (when Redis
   * answers within `timeoutMs`).
   */
  async outages(timeoutMs = 1000): Promise<Outage[]> {
    const mine = this.local();
    if (this.isDown('redis') || this.opts.redis.status !== 'ready') return mine;
    const shared = await withTimeout(readOutages(this.opts.redis), timeoutMs);
    const seen = new Set(mine.map((o) => o.dependency));
    return [...mine, ...(shared ?? []).filter((o) => !seen.has(o.dependency))];
  }

  /**
   * `dep` failed in a way that says it is unreachable. The first report starts an outage (a warning,
   * the shared record, the hooks, a probe); later ones only count.
   */
  down(dep: Dependency, failure: unknown): void {
    if (this.closed || this.state.has(dep)) return;
    const now = this.now();
    const reason = describeFailure(failure);
    const st: LocalState = { dependency: dep, since: now, reason, reporter: dep === 'redis' && (this.redisVoice?.afterMs ?? 0) <= 0, probes: 0, lastSaid: now };
    this.state.set(dep, st);
    void this.startOutage(st);
  }

  private async startOutage(st: LocalState): Promise<void> {
    const dep = st.dependency;
    if (dep !== 'redis') {
      // The first process to see it writes the record and speaks; the others adopt its start.
      const value = JSON.stringify({ since: st.since, reason: st.reason, by: this.opts.processName });
      const wrote = await withTimeout(this.opts.redis.set(outageKey(dep), value, 'PX', this.recordTtlMs(), 'NX'), this.opts.policy.probeTimeoutMs).catch(() => undefined);
      if (wrote === 'OK' || wrote === undefined) st.reporter = true;
      else {
        const prior = await withTimeout(readOutage(this.opts.redis, dep), this.opts.policy.probeTimeoutMs).catch(() => undefined);
        if (prior) st.since = Math.min(st.since, prior.since);
      }
    }
    const line = { dependency: dep, at: this.opts.where[dep], reason: st.reason, since: new Date(st.since).toISOString() };
    const text = `${DEPENDENCY_NAMES[dep]} unreachable (${this.opts.where[dep]}): ${this.affects(dep)} until it is back`;
    if (st.reporter) this.opts.logger.warn(line, text);
    else if (dep === 'redis') this.sayRedisOutageLater(st, line, text);
    else this.opts.logger.debug(line, `${text} (already reported by another process)`);
    for (const h of this.hooks) await Promise.resolve(h.onDown?.(dep, st)).catch((err: unknown) => this.error('outage hook', err));
    this.scheduleProbe(st);
  }

  private affects(dep: Dependency): string {
    return (dep === 'redis' && this.redisVoice?.affects) || AFFECTS[dep];
  }

  /** A Redis outage this process's role does not say at once: at info now, a warning if it lasts. */
  private sayRedisOutageLater(st: LocalState, line: Record<string, unknown>, text: string): void {
    const after = this.redisVoice?.afterMs ?? 0;
    if (!Number.isFinite(after)) return void this.opts.logger.info(line, `${text} (the workers and the primary process warn)`);
    this.opts.logger.info(line, `${text} (a warning follows if it lasts ${formatDuration(after)})`);
    st.warnTimer = setTimeout(() => {
      if (this.closed || this.state.get(st.dependency) !== st) return;
      st.reporter = true;
      st.lastSaid = this.now();
      this.opts.logger.warn(
        { ...line, reason: st.reason },
        `Redis unreachable for ${formatDuration(this.now() - st.since)} (${this.opts.where.redis}): ${this.affects('redis')} until it is back`,
      );
    }, after);
    st.warnTimer.unref?.();
  }

  private recordTtlMs(): number {
    // Outlives the longest wait between two probes, which refresh it: a record whose prober died expires.
    return 3 * this.opts.policy.probe.capMs + 2 * this.opts.policy.probeTimeoutMs;
  }

  private scheduleProbe(st: LocalState): void {
    if (this.closed || this.state.get(st.dependency) !== st) return;
    const wait = backoffDelay(this.opts.policy.probe, ++st.probes);
    st.timer = setTimeout(() => void this.probe(st), wait);
    st.timer.unref?.();
  }

  private async probe(st: LocalState): Promise<void> {
    const dep = st.dependency;
    const signal = AbortSignal.timeout(this.opts.policy.probeTimeoutMs);
    let ok = false;
    try {
      await Promise.race([
        this.opts.probes[dep](signal),
        new Promise((_, reject) => signal.addEventListener('abort', () => reject(new Error(`no answer within ${this.opts.policy.probeTimeoutMs} ms`)), { once: true })),
      ]);
      ok = true;
    } catch (err) {
      st.reason = describeFailure(err);
    }
    if (this.closed || this.state.get(dep) !== st) return;
    if (ok) return this.recovered(st);
    const now = this.now();
    if (dep !== 'redis') {
      // Keep the shared record alive while the outage lasts (and write it again if it lapsed).
      const value = JSON.stringify({ since: st.since, reason: st.reason, by: this.opts.processName });
      await withTimeout(this.opts.redis.set(outageKey(dep), value, 'PX', this.recordTtlMs()), this.opts.policy.probeTimeoutMs).catch(() => undefined);
    }
    if (st.reporter && now - st.lastSaid >= this.opts.policy.repeatMs) {
      st.lastSaid = now;
      this.opts.logger.warn(
        { dependency: dep, at: this.opts.where[dep], reason: st.reason, since: new Date(st.since).toISOString() },
        `${DEPENDENCY_NAMES[dep]} still unreachable after ${formatDuration(now - st.since)}`,
      );
    }
    this.scheduleProbe(st);
  }

  private async recovered(st: LocalState): Promise<void> {
    const dep = st.dependency;
    clearTimeout(st.warnTimer);
    this.state.delete(dep);
    this.lastRecoveryAt = this.now();
    let reporter = st.reporter;
    if (dep !== 'redis') {
      // Whoever removes the record says so; a process that only adopted the outage stays quiet.
      const removed = await withTimeout(this.opts.redis.del(outageKey(dep)), this.opts.policy.probeTimeoutMs).catch(() => undefined);
      reporter = removed === 1 || (removed === undefined && st.reporter);
    }
    const lasted = this.now() - st.since;
    const line = { dependency: dep, at: this.opts.where[dep], outageMs: lasted, since: new Date(st.since).toISOString() };
    const text = `${DEPENDENCY_NAMES[dep]} reachable again after ${formatDuration(lasted)}: ${RESUMES[dep]}`;
    if (reporter) this.opts.logger.warn(line, text);
    else if (dep === 'redis') this.opts.logger.info(line, text); // its own outage, said at info (sayRedisOutages)
    else this.opts.logger.debug(line, text);
    for (const h of this.hooks) await Promise.resolve(h.onUp?.(dep, st)).catch((err: unknown) => this.error('recovery hook', err));
  }

  /**
   * Any other error that may repeat fast (a BullMQ worker's `error` event): the first is logged, then
   * at most one line per `errorRepeatMs` for the same message, with how many were not logged.
   */
  error(what: string, err: unknown, bindings: Record<string, unknown> = {}): void {
    const message = describeFailure(err);
    // Repeats of one error differ only in ids (a job's, a request's, a port): one key for them all.
    const key = `${what}\n${message.replace(/[\w~:.-]*\d[\w~:.-]*/g, '#')}`;
    const now = this.now();
    const seen = this.repeats.get(key);
    if (seen && now - seen.at < this.opts.policy.errorRepeatMs) {
      seen.suppressed++;
      return;
    }
    this.repeats.set(key, { at: now, suppressed: 0 });
    if (this.repeats.size > 1000) this.repeats.clear();
    this.opts.logger.error({ ...bindings, err: message, ...(seen?.suppressed ? { repeated: seen.suppressed } : {}) }, what);
  }

  close(): void {
    this.closed = true;
    for (const st of this.state.values()) {
      clearTimeout(st.timer);
      clearTimeout(st.warnTimer);
    }
  }
}

/** What an outage of each dependency stops, for the warning. */
const AFFECTS: Record<Dependency, string> = {
  redis: 'workers wait and retry with backoff',
  s3: 'submissions are paused, results fal finished wait to be stored',
  fal: 'submissions are paused, rows wait',
};
const RESUMES: Record<Dependency, string> = {
  redis: 'workers go on',
  s3: 'submissions and storing resume',
  fal: 'submissions resume',
};

async function readOutage(redis: Redis, dep: Dependency): Promise<Outage | undefined> {
  return parseOutage(dep, await redis.get(outageKey(dep)));
}

/** The outages recorded in Redis by any process. */
export async function readOutages(redis: Redis): Promise<Outage[]> {
  const deps = DEPENDENCIES.filter((d) => d !== 'redis');
  const values = await redis.mget(...deps.map(outageKey));
  return deps.map((d, i) => parseOutage(d, values[i] ?? null)).filter((o): o is Outage => o !== undefined);
}

function parseOutage(dependency: Dependency, raw: string | null): Outage | undefined {
  if (!raw) return undefined;
  try {
    const v = JSON.parse(raw) as { since?: unknown; reason?: unknown; by?: unknown };
    return { dependency, since: Number(v.since) || 0, reason: String(v.reason ?? ''), by: typeof v.by === 'string' ? v.by : undefined };
  } catch {
    return undefined;
  }
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([p, new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
