// Retry and timing policy as data: one entry per queue (and one for the reconciler), built from config
// once per process. Every number that decides when something is tried again lives here, so a setting
// cannot exist without being read, and tests shorten delays by overriding entries instead of sleeping.
import type { Config } from './config.ts';

export interface Backoff {
  /** First retry delay. */
  baseMs: number;
  /** Longest delay between two tries. */
  capMs: number;
  /** Share of each delay that is random (0 = none, 1 = full jitter). */
  jitter: number;
}

export interface Policy {
  submit: {
    /** BullMQ attempts of a submit job: not the bound (retryWindowMs is), only a backstop far beyond it. */
    tries: number;
    /** SUBMIT_RETRY_WINDOW: how long from its first failure a submission is tried again (fal unreachable, 429/5xx). */
    retryWindowMs: number;
    backoff: Backoff;
    /** Wait before a new attempt of a row fal failed without billing it (runner_server_error and the like); by attempt. */
    newAttemptBackoff: Backoff;
    /** How often a submit job held back by the auth pause looks again. */
    pauseRecheckMs: number;
    /** Failed submit jobs are kept this long for inspection. */
    keepFailedSeconds: number;
  };
  results: {
    /** Tries to download a result from its result host before the row fails (STORE_MAX_TRIES). */
    tries: number;
    /** STORE_RETRY_WINDOW: how long from its arrival a result job waits for S3 (or fal) to come back. */
    retryWindowMs: number;
    backoff: Backoff;
    /** Looks at a result for a request no row knows yet, before it is dropped. */
    unknownRequestTries: number;
    /** Finished result jobs kept so duplicate deliveries are absorbed by their job id. */
    keepCompleted: { ageSeconds: number; count: number };
    keepFailedSeconds: number;
  };
  produce: {
    /** A producer whose worker died is picked up again by stalled-job detection; these are tries after errors. */
    tries: number;
    backoff: Backoff;
    /** How often a producer waiting on a full window looks again. */
    windowPollMs: number;
    /** Rows per BullMQ addBulk call (never more than the window). */
    batchSize: number;
    /** Local faces uploaded to S3 at once. */
    uploadConcurrency: number;
  };
  finalize: { tries: number; backoff: Backoff };
  /** Preflight's look at one face (producer/preflight.ts). */
  preflight: {
    /** Tries of a face whose server stalled, refused the connection or answered 5xx/408/429. */
    tries: number;
    backoff: Backoff;
    /** One look, every redirect hop and the bytes read included. */
    timeoutMs: number;
    /** First bytes asked for (a ranged GET), and the most read: a JPEG's size may follow its metadata. */
    headerBytes: number;
  };
  reconcile: {
    /** RECONCILE_INTERVAL_MS */
    intervalMs: number;
    /** RECONCILE_GRACE_MS: how long a submission waits for its webhook before fal is polled. */
    graceMs: number;
    /** Longest wait between two polls of one request. */
    maxPollIntervalMs: number;
    /** Rows looked at in parallel by one sweep. */
    sweepConcurrency: number;
    /** A terminal row not flushed this long after it ended: its owner died; flush it. */
    flushAfterMs: number;
    /** A row storing this long: its result job died; fetch the result again. */
    redriveStoreAfterMs: number;
  };
  /** Poll mode: when each request is looked at (see src/worker/poll.ts). */
  poll: {
    /** Before a run has seen any request finish: the first look this long after submitting, then doubling. */
    coldFirstMs: number;
    /** Shortest gap between two looks at one request. */
    minGapMs: number;
    /** A request past its expected end is looked at again within this long. */
    overdueGapMaxMs: number;
    /** Longest gap between two looks. */
    maxGapMs: number;
    /** fal unreachable or refusing: first wait, doubling. */
    unreachableBaseMs: number;
    /** Share of the newest sample in a run's run-time estimate once it has a few. */
    ewmaWeight: number;
    /**
     * How long an endpoint's run time learned by one run seeds the first look at each request of the
     * runs after it (until they learn their own); refreshed whenever a run learns.
     */
    endpointTimingTtlSeconds: number;
    /** Poll jobs at once per worker process. */
    concurrency: number;
    /** How long past a poll job's time the sweep waits before it takes over. */
    safetyMs: number;
  };
  /** FAL_CONCURRENCY places: how long the submit queue waits while all are taken (a share of the run time per place, within bounds). */
  falSlots: { waitMinMs: number; waitMaxMs: number; waitUnknownMs: number };
  jobs: {
    /** JOB_LOCK_MS: BullMQ job lock; a killed worker's jobs are retried after about this long. */
    lockMs: number;
    stalledIntervalMs: number;
  };
  /** After Redis restarted (it may have lost its last writes): see src/core/redisRestarts.ts. */
  redisRestart: {
    /** Submissions wait this long after a restart is seen, so every process writes back its recent claims first. */
    holdMs: number;
    /** Claims a process remembers to write back: those made this long before Redis was last seen. */
    rememberMs: number;
  };
  /** Outages of Redis, S3 and fal (see core/dependencies.ts). */
  dependencies: {
    /** Waits between two probes of a dependency that is down. */
    probe: Backoff;
    probeTimeoutMs: number;
    /** While an outage lasts, a reminder at most this often. */
    repeatMs: number;
    /** One other error repeating (a worker's `error` event) is logged at most this often. */
    errorRepeatMs: number;
    /** A process without workers (receiver, scheduler) warns of a Redis outage once it lasts this long. */
    redisWarnAfterMs: number;
    /** A stalled Redis (connected, answering nothing) is noticed by a PING (core/redisStalls.ts). */
    redisStall: {
      /** How often the connection is checked while it is up. */
      pingEveryMs: number;
      /** A PING unanswered this long: Redis has stalled. */
      stalledAfterMs: number;
    };
    /** A job held back by an outage (its queue paused) looks again after this long. */
    recheckMs: number;
    /**
     * A BullMQ worker that reports an error pauses itself this long (doubling while errors go on):
     * BullMQ fetches again at once after errors it does not take for connection errors (MISCONF),
     * which would otherwise be a busy loop.
     */
    errorBrake: Backoff;
  };
  /**
   * ioredis commandTimeout: a command unanswered this long fails, so a stalled Redis is noticed. Longer
   * than BullMQ's longest blocking wait (BZPOPMIN, at most 10 s, plus its own 1 s watchdog), which
   * uses a copy of the same connection.
   */
  redisCommandTimeoutMs: number;
  /** How often a waiter (run --wait, demo) reads the run again. */
  waitPollMs: number;
  /** Completion notices (NOTIFY_URL): tries with backoff; a notice that never arrives never fails its run. */
  notify: { tries: number; backoff: Backoff; timeoutMs: number; keepFailedSeconds: number };
  dashboard: {
    /** A signed-in browser's session lives this long in Redis (and its cookie as long); sign-out deletes it. */
    sessionSeconds: number;
    /** Wrong tokens from one client address: this many within windowSeconds lock it out. */
    signInFailures: number;
    signInWindowSeconds: number;
    /** The first lockout; each further one within lockoutMemorySeconds doubles it, up to maxLockoutSeconds. */
    firstLockoutSeconds: number;
    maxLockoutSeconds: number;
    lockoutMemorySeconds: number;
    /** A face thumbnail the dashboard fetches: largest body, whole-fetch time limit. */
    thumbnailMaxBytes: number;
    thumbnailTimeoutMs: number;
  };
  drop: {
    /** DROP_POLL_MS */
    pollMs: number;
    /** DROP_SETTLE_MS */
    settleMs: number;
    /** A claim on a dropped object lapses this long after its scheduler stopped renewing it (died). */
    claimMs: number;
  };
}

/** Tries no window reaches with the capped backoff (a try a minute for weeks): BullMQ needs a number. */
const WINDOW_BACKSTOP_TRIES = 100_000;

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };
export type PolicyOverrides = DeepPartial<Policy>;

export function buildPolicy(cfg: Config, overrides: PolicyOverrides = {}): Policy {
  const lock = cfg.JOB_LOCK_MS;
  const base: Policy = {
    submit: {
      tries: WINDOW_BACKSTOP_TRIES,
      retryWindowMs: cfg.SUBMIT_RETRY_WINDOW,
      backoff: { baseMs: 1000, capMs: 60_000, jitter: 0.5 },
      newAttemptBackoff: { baseMs: 5000, capMs: 120_000, jitter: 0.5 },
      pauseRecheckMs: 10_000,
      keepFailedSeconds: 7 * 86400,
    },
    results: {
      tries: cfg.STORE_MAX_TRIES,
      retryWindowMs: cfg.STORE_RETRY_WINDOW,
      backoff: { baseMs: cfg.STORE_RETRY_DELAY_MS, capMs: 60_000, jitter: 0.5 },
      unknownRequestTries: 5,
      keepCompleted: { ageSeconds: 3600, count: 1000 },
      keepFailedSeconds: 7 * 86400,
    },
    produce: {
      tries: 20,
      backoff: { baseMs: 1000, capMs: 60_000, jitter: 0.5 },
      windowPollMs: 200,
      batchSize: 500,
      uploadConcurrency: 16,
    },
    finalize: { tries: 10, backoff: { baseMs: 1000, capMs: 60_000, jitter: 0 } },
    preflight: { tries: 3, backoff: { baseMs: 500, capMs: 5000, jitter: 0.5 }, timeoutMs: 15_000, headerBytes: 256 * 1024 },
    reconcile: {
      intervalMs: cfg.RECONCILE_INTERVAL_MS,
      graceMs: cfg.RECONCILE_GRACE_MS,
      maxPollIntervalMs: 5 * 60_000,
      sweepConcurrency: 16,
      flushAfterMs: lock,
      redriveStoreAfterMs: lock * 4,
    },
    poll: {
      coldFirstMs: 1000,
      minGapMs: 250,
      overdueGapMaxMs: 2000,
      maxGapMs: 60_000,
      unreachableBaseMs: 1000,
      ewmaWeight: 0.2,
      endpointTimingTtlSeconds: 7 * 86400,
      concurrency: 16,
      safetyMs: Math.max(5000, 2 * lock),
    },
    falSlots: { waitMinMs: 25, waitMaxMs: 500, waitUnknownMs: 100 },
    jobs: { lockMs: lock, stalledIntervalMs: Math.max(1000, Math.floor(lock / 2)) },
    redisRestart: { holdMs: 10_000, rememberMs: 30_000 },
    dependencies: {
      probe: { baseMs: 1000, capMs: 30_000, jitter: 0.2 },
      probeTimeoutMs: 5000,
      repeatMs: 5 * 60_000,
      errorRepeatMs: 60_000,
      // fal delivers a refused webhook again for hours; a receiver warns once its refusals last a minute.
      redisWarnAfterMs: 60_000,
      // Far below a command's own timeout (redisCommandTimeoutMs), so a stall of seconds is said as one.
      redisStall: { pingEveryMs: 2000, stalledAfterMs: 5000 },
      recheckMs: 10_000,
      errorBrake: { baseMs: 1000, capMs: 30_000, jitter: 0.2 },
    },
    redisCommandTimeoutMs: 15_000,
    waitPollMs: 500,
    notify: { tries: 10, backoff: { baseMs: 2000, capMs: 10 * 60_000, jitter: 0.5 }, timeoutMs: 10_000, keepFailedSeconds: 7 * 86400 },
    dashboard: {
      sessionSeconds: 12 * 3600,
      signInFailures: 5,
      signInWindowSeconds: 15 * 60,
      firstLockoutSeconds: 30,
      maxLockoutSeconds: 3600,
      lockoutMemorySeconds: 86400,
      thumbnailMaxBytes: 10 * 1024 * 1024,
      thumbnailTimeoutMs: 10_000,
    },
    drop: { pollMs: cfg.DROP_POLL_MS, settleMs: cfg.DROP_SETTLE_MS, claimMs: lock },
  };
  return merge(base, overrides);
}

function merge<T>(base: T, over: DeepPartial<T> | undefined): T {
  if (!over) return base;
  const out = { ...base } as Record<string, unknown>;
  for (const [k, v] of Object.entries(over)) {
    if (v === undefined) continue;
    const cur = out[k];
    out[k] = cur && typeof cur === 'object' && typeof v === 'object' ? merge(cur, v as never) : v;
  }
  return out as T;
}

/** Delay before try number `attemptsMade + 1`: exponential from baseMs, capped, with jitter. */
export function backoffDelay(b: Backoff, attemptsMade: number, random = Math.random): number {
  const exp = Math.min(b.capMs, b.baseMs * 2 ** Math.max(0, attemptsMade - 1));
  return Math.round(exp * (1 - b.jitter) + random() * exp * b.jitter);
}

/** BullMQ job options for one queue's entry: tries, our backoff (a custom strategy named after the queue), retention. */
export function jobOptions(
  entry: { tries: number; keepFailedSeconds?: number },
  strategy: 'submit' | 'results' | 'produce' | 'finalize' | 'notify',
  keepCompleted: boolean | { age: number; count: number } = true,
) {
  return {
    attempts: entry.tries,
    backoff: { type: strategy },
    removeOnComplete: keepCompleted,
    removeOnFail: { age: entry.keepFailedSeconds ?? 7 * 86400 },
  };
}
