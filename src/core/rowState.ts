// The row state machine. Every change of row or run state is one atomic Lua command from
// ./commands (one file per transition); nothing else writes row state. Run counters are updated only
// inside those commands, guarded by the row's done bit, so they cannot drift from the rows.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { ERROR_CATEGORIES, type ErrorCategory } from './falErrors.ts';
import { keys, REQUEST_MAPPING_TTL_SECONDS, type RowState, type RunState } from './keys.ts';
import { policyFields, policyOf, type RunPolicy } from './runPolicy.ts';

/** Every command, its number of fixed KEYS (request-mapping keys may follow) and the replies it may give. */
const COMMANDS = {
  claimSubmit: { keys: 5, replies: ['submit', 'adopted', 'terminal', 'norun', 'canceled', 'failed', 'inflight', 'already', 'stale'] },
  reclaimSubmit: { keys: 4, replies: ['adopted', 'noop'] },
  releaseSubmit: { keys: 2, replies: ['ok', 'noop'] },
  recordSubmit: { keys: 5, replies: ['ok', 'adopted', 'late', 'gone', 'canceled'] },
  recordResult: { keys: 6, replies: ['store', 'failed', 'retry', 'duplicate', 'ignored', 'unknown', 'stale'] },
  completeRow: { keys: 4, replies: ['ok', 'noop', 'stale'] },
  finishRow: { keys: 4, replies: ['ok', 'noop', 'stale'] },
  supersede: { keys: 4, replies: ['resubmit', 'failed', 'noop', 'stale'] },
  markPolled: { keys: 1, replies: ['ok', 'noop'] },
  forgetRow: { keys: 3, replies: ['ok', 'open', 'runDone'] },
  admitBatch: { keys: 3, replies: ['ok', 'replayed'] },
  finishProducing: { keys: 2, replies: ['ok', 'runDone'] },
  createRun: { keys: 4, replies: ['created', 'exists'] },
  cancelRun: { keys: 1, replies: ['canceled', 'already', 'finished', 'norun'] },
  finishRun: { keys: 8, replies: ['finished', 'already', 'open'] },
  linkRetry: { keys: 1, replies: ['ok', 'norun'] },
} as const;
type CommandName = keyof typeof COMMANDS;
type Reply<N extends CommandName> = (typeof COMMANDS)[N]['replies'][number];

/** A script answered something it never answers: Redis and this code are out of step. */
export class UnexpectedReplyError extends Error {
  override name = 'UnexpectedReplyError';
}

const lib = readFileSync(new URL('./commands/_lib.lua', import.meta.url), 'utf8');
const scripts = Object.fromEntries(
  Object.keys(COMMANDS).map((name) => [name, `${lib}\n${readFileSync(new URL(`./commands/${name}.lua`, import.meta.url), 'utf8')}`]),
) as Record<CommandName, string>;
if (!lib.includes(`MAPPING_TTL = ${REQUEST_MAPPING_TTL_SECONDS}`)) throw new Error('commands/_lib.lua MAPPING_TTL is out of step with keys.ts');

/** How often a terminating command is retried when a request was recorded between reading the row and the call. */
const STALE_RETRIES = 5;

/** What a row carries from the manifest into its state (kept while the row is in flight). */
export interface RowData {
  id?: string;
  faceUrl: string;
  faceKind: 'http' | 'data' | 's3' | 'local';
  /** S3 key of an uploaded local face. */
  faceObjectKey?: string;
  input: Record<string, unknown>;
  extra: Record<string, string>;
  /** What preflight read of the face (absent when the run looks at no face). */
  face?: FaceFacts;
}

/** A face as preflight read it: pixel size, file size when known, sha256 when the whole face was read. */
export interface FaceFacts {
  width: number;
  height: number;
  bytes?: number;
  sha256?: string;
}

export interface Row {
  runId: string;
  key: string;
  line: number;
  /** The row's position among the manifest's data rows: its done bit (absent on rows recorded before it was kept). */
  ordinal?: number;
  state: RowState;
  attempt: number;
  requestId?: string;
  requestIds: string[];
  storeRequestId?: string;
  data: RowData;
  createdAt: number;
  claimedAt?: number;
  submittedAt?: number;
  storingSince?: number;
  finishedAt?: number;
  deadlineAt: number;
  nextPollAt?: number;
  polls: number;
  /** When a poll first saw the current request IN_PROGRESS (the row deadline counts from then). */
  startedAt?: number;
  /** fal's status of the current request at the last poll. */
  falStatus?: string;
  error?: string;
  /** The final error's type (fal's error_type, or ours: see falErrors.ts) and report category. */
  errorType?: string;
  errorCategory?: ErrorCategory;
  /** Every failed attempt's error, in order. */
  attemptErrors: AttemptError[];
  lastError?: string;
  images?: StoredImage[];
  seed?: string;
  prompt?: string;
  /** Estimated cost of one fal request for this row (millionths of the run's currency). */
  cost?: number;
}

export interface AttemptError {
  attempt: number;
  request_id: string;
  error_type: string;
  error_category: string;
  error: string;
}

/** The kind of a failure a row ends with (or an attempt gives up with). */
export interface ErrorKind {
  type: string;
  category: ErrorCategory;
}

/** An ERROR result's verdict, as recordResult.lua reads it. */
export interface ResultVerdict extends ErrorKind {
  /** A new attempt of the row (fal did not bill this one and it may succeed). */
  retry: boolean;
  /** fal does not bill this failure: its estimate leaves the run's cost. */
  refund: boolean;
}

export interface StoredImage {
  key: string;
  sourceUrl: string;
  contentType: string;
  width?: number;
  height?: number;
  bytes: number;
  sha256: string;
}

export interface RunRecord {
  runId: string;
  state: RunState;
  createdAt: number;
  finishedAt?: number;
  manifest: string;
  manifestKey: string;
  cursor: number;
  producerDone: boolean;
  total?: number;
  queued: number;
  completed: number;
  failed: number;
  rejected: number;
  canceled: number;
  submits: number;
  /** Requests fal no longer knew (404 for the request: it restarted or lost it), resubmitted as new attempts. */
  resubmittedForgotten: number;
  /** Estimated cost billed so far: submissions fal accepted, less those it failed without billing (millionths). */
  costMicros: number;
  /** Estimated cost of every submission fal accepted, billed or not (millionths). */
  submittedCostMicros: number;
  /** Failed rows by their error's category. */
  failedByCategory: Partial<Record<ErrorCategory, number>>;
  stopReason?: string;
  /** Runs made of this run's failed rows. */
  retriedBy: string[];
  policy: RunPolicy;
  options: Record<string, unknown>;
}

/** Run counters the finalize sets from its report. */
export type RunCounter = 'completed' | 'failed' | 'rejected' | 'canceled' | 'submits' | 'costMicros';

const num = (v: string | undefined) => (v === undefined || v === '' ? undefined : Number(v));

/** How many runs `runs` lists, newest first. */
const RUNS_LISTED = 1000;
/** How many runs the index of runs keeps (10 × what is listed); older entries are dropped as runs start. */
export const RUNS_INDEX_MAX = 10 * RUNS_LISTED;

export class RowStore {
  private readonly call: { [N in CommandName]: (keys: string[], args: (string | number)[]) => Promise<Reply<N>> };

  constructor(readonly redis: Redis) {
    const r = redis as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>;
    for (const name of Object.keys(COMMANDS) as CommandName[]) {
      // numberOfKeys is given per call: commands that can end a row take a variable number of keys.
      if (!r[`pb_${name}`]) redis.defineCommand(`pb_${name}`, { lua: scripts[name] });
    }
    this.call = Object.fromEntries(
      (Object.keys(COMMANDS) as CommandName[]).map((name) => [
        name,
        async (keys: string[], args: (string | number)[]) => {
          const raw = await r[`pb_${name}`]!.call(redis, keys.length, ...keys, ...args);
          const code = Array.isArray(raw) ? raw[0] : raw;
          if (!(COMMANDS[name].replies as readonly unknown[]).includes(code)) {
            throw new UnexpectedReplyError(`Redis command ${name} answered ${JSON.stringify(raw)}, not one of ${COMMANDS[name].replies.join(', ')}`);
          }
          return raw;
        },
      ]),
    ) as never;
  }

  private rowKeys(runId: string, key: string) {
    return [keys.row(runId, key), keys.run(runId), keys.done(runId), keys.active(runId)];
  }

  /**
   * Calls a command that can end a row with the mapping key of every request the row made (BullMQ's
   * convention: the script touches only keys it is given). A request recorded between the read and the
   * call makes the script answer 'stale', and the row is read again.
   */
  private async ending<T>(
    runId: string,
    key: string,
    fn: (reqKeys: string[], reqIds: string[]) => Promise<T>,
    known?: string[],
  ): Promise<T> {
    // `known`: the request ids the caller expects (a row it just read, or none for a fresh row). A right
    // guess spares reading the row first; a wrong one only costs the script's 'stale' and a read.
    for (let i = known ? -1 : 0; ; i++) {
      const ids = i < 0 && known ? known : await this.requestIdsOf(runId, key);
      const res = await fn(ids.map(keys.request), ids);
      const code = Array.isArray(res) ? (res as unknown[])[0] : res;
      if (code !== 'stale') return res;
      if (i >= STALE_RETRIES) throw new Error(`row ${runId}/${key} kept changing while it was being ended`);
    }
  }

  private async requestIdsOf(runId: string, key: string): Promise<string[]> {
    const h = await this.redis.hgetall(keys.row(runId, key));
    return Object.entries(h)
      .filter(([f]) => /^req\d+$/.test(f))
      .map(([, v]) => v);
  }

  // ---- runs -------------------------------------------------------------------------------

  /**
   * Creates the run with its policy, atomically, if it does not exist; returns true when it was created.
   * The index of runs keeps the newest `indexMax` (RUNS_INDEX_MAX) of them.
   */
  async createRun(
    run: { runId: string; manifest: string; manifestKey: string; options: Record<string, unknown>; policy: RunPolicy },
    indexMax = RUNS_INDEX_MAX,
  ): Promise<boolean> {
    const fields = { manifest: run.manifest, manifestKey: run.manifestKey, ...policyFields(run.policy) };
    const reply = await this.call.createRun(
      [keys.run(run.runId), keys.runs(), keys.activeRuns(), keys.runOptions(run.runId)],
      [run.runId, Date.now(), JSON.stringify(run.options), indexMax, ...Object.entries(fields).flat()],
    );
    return reply === 'created';
  }

  async getRun(runId: string): Promise<RunRecord | undefined> {
    const [[, hash], [, options]] = (await this.redis.multi().hgetall(keys.run(runId)).get(keys.runOptions(runId)).exec()) as [
      [Error | null, Record<string, string>],
      [Error | null, string | null],
    ];
    const h = hash ?? {};
    if (!h.runId || !h.state) return undefined;
    // Runs recorded before the options had their own key keep them in the hash.
    const optionsJson = options ?? h.options;
    return {
      runId: h.runId,
      state: h.state as RunState,
      createdAt: Number(h.createdAt),
      finishedAt: num(h.finishedAt),
      manifest: h.manifest ?? '',
      manifestKey: h.manifestKey ?? '',
      cursor: Number(h.cursor ?? 0),
      producerDone: h.producerDone === '1',
      total: num(h.total),
      queued: Number(h.queued ?? 0),
      completed: Number(h.completed ?? 0),
      failed: Number(h.failed ?? 0),
      rejected: Number(h.rejected ?? 0),
      canceled: Number(h.canceled ?? 0),
      submits: Number(h.submits ?? 0),
      resubmittedForgotten: Number(h.resubmittedForgotten ?? 0),
      costMicros: Number(h.costMicros ?? 0),
      // Runs created before it was counted: what they counted as cost was what they submitted.
      submittedCostMicros: Number(h.submittedCostMicros ?? h.costMicros ?? 0),
      failedByCategory: Object.fromEntries(
        ERROR_CATEGORIES.filter((c) => Number(h[`failedBy:${c}`] ?? 0) > 0).map((c) => [c, Number(h[`failedBy:${c}`])]),
      ) as Partial<Record<ErrorCategory, number>>,
      stopReason: h.stopReason,
      retriedBy: h.retriedBy ? h.retriedBy.split(',') : [],
      policy: policyOf(h),
      options: optionsJson ? (JSON.parse(optionsJson) as Record<string, unknown>) : {},
    };
  }

  /** Run ids, newest first. */
  async runIds(limit = RUNS_LISTED): Promise<string[]> {
    return this.redis.zrevrange(keys.runs(), 0, limit - 1);
  }

  /** Stops submitting for a run. 'canceled' the first time; rows in flight are ended by the caller. */
  async cancelRun(runId: string, reason: string): Promise<Reply<'cancelRun'>> {
    return this.call.cancelRun([keys.run(runId)], [reason, Date.now()]);
  }

  /**
   * Marks the run over (report written) at `finishedAt` (the time its summary.json carries), its counters
   * set to `counters` (what the report counted): 'already' when it was, 'open' when rows are in flight
   * again (Redis restarted without its last writes). Every key of the run expires `retentionMs` later
   * (RUN_RETENTION; undefined keeps them).
   */
  async finishRun(
    runId: string,
    state: RunState,
    finishedAt = Date.now(),
    counters: Partial<Record<RunCounter, number>> = {},
    retentionMs?: number,
  ): Promise<'finished' | 'already' | 'open'> {
    const pairs = Object.entries(counters).flatMap(([k, v]) => [k, Math.round(v)]);
    const retention = retentionMs === undefined ? '' : Math.max(1, Math.ceil(retentionMs / 1000));
    return this.call.finishRun(
      [keys.run(runId), keys.activeRuns(), keys.active(runId), keys.runOptions(runId), keys.done(runId), keys.canceled(runId), keys.select(runId), keys.timing(runId)],
      [runId, state, finishedAt, retention, ...pairs],
    );
  }

  /** When each Redis restart was first seen while the run was in progress (see redisRestarts.ts). */
  async redisRestartsSeen(runId: string): Promise<number[]> {
    const h = await this.redis.hgetall(keys.run(runId));
    return Object.entries(h)
      .filter(([f]) => f.startsWith('restartedAt:'))
      .map(([, v]) => Number(v))
      .filter(Number.isFinite);
  }

  /** Adds a retry run to the run's retriedBy (atomically: retries started at once are all kept). */
  async linkRetry(runId: string, retryRunId: string): Promise<boolean> {
    return (await this.call.linkRetry([keys.run(runId)], [retryRunId])) === 'ok';
  }

  /** Replaces the run's options (kept until the run's keys expire, like the run). */
  async setRunOptions(runId: string, options: Record<string, unknown>): Promise<void> {
    await this.redis.set(keys.runOptions(runId), JSON.stringify(options), 'KEEPTTL');
  }

  /** Extra fields on the run (links between runs, estimates). */
  async annotateRun(runId: string, fields: Record<string, string | number>): Promise<void> {
    await this.redis.hset(keys.run(runId), fields);
  }

  async runField(runId: string, field: string): Promise<string | undefined> {
    return (await this.redis.hget(keys.run(runId), field)) ?? undefined;
  }

  /** Rows of the run that are queued but not yet terminal (what the producer's window counts). */
  async inFlight(runId: string): Promise<number> {
    const [queued, completed, failed, canceled] = await this.redis.hmget(keys.run(runId), 'queued', 'completed', 'failed', 'canceled');
    return Number(queued ?? 0) - Number(completed ?? 0) - Number(failed ?? 0) - Number(canceled ?? 0);
  }

  /**
   * Counts a batch the producer read up to manifest line `cursor`: `queuedCount` rows enqueued,
   * `rejectedCount` rejected (their reasons are in the run's report parts, see producer/rejectedRows.ts),
   * `canceled` rows read after the run was canceled or stopped (by ordinal, their line and reason).
   */
  async admitBatch(
    runId: string,
    cursor: number,
    queuedCount: number,
    rejectedCount: number,
    canceled: { line: number; ordinal: number; reason: string }[] = [],
  ): Promise<boolean> {
    const triples = canceled.flatMap((r) => [r.ordinal, r.line, r.reason]);
    const reply = await this.call.admitBatch([keys.run(runId), keys.done(runId), keys.canceled(runId)], [cursor, queuedCount, rejectedCount, ...triples]);
    return reply === 'ok';
  }

  /** Whether any row of the run was canceled before it was enqueued (most runs: none, and no lookups). */
  async hasCanceledReasons(runId: string): Promise<boolean> {
    return (await this.redis.exists(keys.canceled(runId))) === 1;
  }

  /** Why rows canceled before they were enqueued were canceled, by manifest line. */
  async canceledReasons(runId: string, lines: number[]): Promise<(string | null)[]> {
    if (!lines.length) return [];
    return this.redis.hmget(keys.canceled(runId), ...lines.map(String));
  }

  /** The lines a run is made of, when it is a subset of its manifest (a retry); undefined for all lines. */
  async selectedLines(runId: string): Promise<Buffer | undefined> {
    return (await this.redis.getBuffer(keys.select(runId))) ?? undefined;
  }

  async selectLines(runId: string, lines: number[]): Promise<void> {
    const m = this.redis.multi();
    for (const l of lines) m.setbit(keys.select(runId), l, 1);
    await m.exec();
  }

  /** Returns true when the run has nothing left in flight. */
  async finishProducing(runId: string, total: number): Promise<boolean> {
    return (await this.call.finishProducing([keys.run(runId), keys.active(runId)], [total])) === 'runDone';
  }

  async activeRunIds(): Promise<string[]> {
    return this.redis.smembers(keys.activeRuns());
  }

  async activeRowKeys(runId: string): Promise<string[]> {
    return this.redis.smembers(keys.active(runId));
  }

  /** Whether the row at `ordinal` (its position among the manifest's data rows) has ended. */
  async isDone(runId: string, ordinal: number): Promise<boolean> {
    return (await this.redis.getbit(keys.done(runId), ordinal)) === 1;
  }

  // ---- rows -------------------------------------------------------------------------------

  async getRow(runId: string, key: string): Promise<Row | undefined> {
    return rowOf(runId, key, await this.redis.hgetall(keys.row(runId, key)));
  }

  /**
   * Claims a row for submission under its run's policy; `costMicros` is the row's estimated cost,
   * counted against the run's cost cap. A claim returns the endpoint of the run. `claimId` names this
   * claim: asked again with the same id (after a timeout), or sent again by ioredis after a reconnect,
   * it answers as the first time (see claimSubmit.lua).
   */
  async claimSubmit(
    runId: string,
    key: string,
    line: number,
    data: RowData,
    costMicros = 0,
    ordinal?: number,
    claimId: string = randomUUID(),
  ): Promise<
    { outcome: 'submit' | 'adopted'; attempt: number; endpoint: string } | { outcome: 'terminal' | 'norun' | 'canceled' | 'failed' | 'inflight' | 'already'; detail?: string }
  > {
    // Most claims are of a fresh row (no request yet): tried first without reading the row.
    const [outcome, detail, endpoint] = (await this.ending(
      runId,
      key,
      (reqKeys, ids) =>
        this.call.claimSubmit(
          [...this.rowKeys(runId, key), keys.adopt(runId, key), ...reqKeys],
          [line, key, Date.now(), JSON.stringify(data), Math.round(costMicros), ordinal ?? '', claimId, ...ids],
        ),
      [],
    )) as unknown as [Exclude<Reply<'claimSubmit'>, 'stale'>, string | undefined, string | undefined];
    if (outcome === 'submit' || outcome === 'adopted') return { outcome, attempt: Number(detail), endpoint: endpoint ?? '' };
    return { outcome, detail };
  }

  async releaseSubmit(runId: string, key: string, attempt: number, error: string): Promise<boolean> {
    return (await this.call.releaseSubmit([keys.row(runId, key), keys.run(runId)], [attempt, error])) === 'ok';
  }

  /**
   * fal accepted attempt `attempt`. `claimed`: the row as its claim had it (line, data, cost), so a row
   * Redis lost since (a restart without its last writes) is made again from it ('adopted').
   */
  async recordSubmit(
    runId: string,
    key: string,
    attempt: number,
    requestId: string,
    nextPollAt: number,
    claimed?: { line: number; ordinal?: number; data: RowData; costMicros?: number },
  ): Promise<Reply<'recordSubmit'>> {
    return this.call.recordSubmit(
      [keys.row(runId, key), keys.request(requestId), keys.run(runId), keys.done(runId), keys.active(runId)],
      [
        requestId,
        attempt,
        Date.now(),
        mappingValue(runId, key, attempt),
        nextPollAt,
        claimed?.line ?? '',
        key,
        claimed ? JSON.stringify(claimed.data) : '',
        Math.round(claimed?.costMicros ?? 0),
        claimed?.ordinal ?? '',
      ],
    );
  }

  /**
   * After a Redis restart: writes back a claim this worker made shortly before (see reclaimSubmit.lua).
   * True when the row had lost it.
   */
  async reclaimSubmit(runId: string, key: string, attempt: number, claimed: { line: number; ordinal?: number; data: RowData; costMicros?: number }): Promise<boolean> {
    const reply = await this.call.reclaimSubmit(
      [keys.row(runId, key), keys.run(runId), keys.done(runId), keys.active(runId)],
      [attempt, claimed.line, key, JSON.stringify(claimed.data), Math.round(claimed.costMicros ?? 0), Date.now(), claimed.ordinal ?? ''],
    );
    return reply === 'adopted';
  }

  async recordResult(
    runId: string,
    key: string,
    result: { requestId: string; hintAttempt?: number; status: 'OK' | 'ERROR'; error?: string; verdict?: ResultVerdict },
  ): Promise<Exclude<Reply<'recordResult'>, 'stale'>> {
    return (await this.recordResultRow(runId, key, result)).decision;
  }

  /** recordResult, with the row as it stands after a 'store' decision (read by the same script). */
  async recordResultRow(
    runId: string,
    key: string,
    result: { requestId: string; hintAttempt?: number; status: 'OK' | 'ERROR'; error?: string; verdict?: ResultVerdict },
  ): Promise<{ decision: Exclude<Reply<'recordResult'>, 'stale'>; row?: Row }> {
    // Most rows made one request, the one whose result this is: tried first without reading the row.
    const reply = await this.ending(
      runId,
      key,
      (reqKeys, ids) =>
        this.call.recordResult(
          [...this.rowKeys(runId, key), keys.request(result.requestId), keys.adopt(runId, key), ...reqKeys],
          [
            result.requestId,
            result.hintAttempt ?? '',
            result.status,
            Date.now(),
            result.error ?? 'fal reported an error',
            mappingValue(runId, key, result.hintAttempt ?? 0),
            result.verdict ? JSON.stringify(result.verdict) : '',
            ...ids,
          ],
        ),
      [],
    );
    return withRow(runId, key, reply) as { decision: Exclude<Reply<'recordResult'>, 'stale'>; row?: Row };
  }

  async completeRow(runId: string, key: string, requestId: string, images: StoredImage[], seed: string, prompt: string): Promise<boolean> {
    return (await this.completeRowRead(runId, key, requestId, images, seed, prompt)) !== undefined;
  }

  /**
   * completeRow answering the completed row (undefined when this call did not complete it).
   * `requestIds`: the row's requests as the caller last read them (a guess; a wrong one is read again).
   */
  async completeRowRead(
    runId: string,
    key: string,
    requestId: string,
    images: StoredImage[],
    seed: string,
    prompt: string,
    requestIds?: string[],
  ): Promise<Row | undefined> {
    const reply = await this.ending(
      runId,
      key,
      (reqKeys, ids) =>
        this.call.completeRow([...this.rowKeys(runId, key), ...reqKeys], [requestId, Date.now(), JSON.stringify(images), seed, prompt, ...ids]),
      requestIds,
    );
    const { decision, row } = withRow(runId, key, reply);
    return decision === 'ok' ? row : undefined;
  }

  /** Ends an open row as failed/canceled if it is in one of `from` (and about `requestId`, when given). */
  async finishRow(
    runId: string,
    key: string,
    outcome: 'failed' | 'canceled',
    reason: string,
    from: RowState[],
    requestId = '',
    kind: ErrorKind = outcome === 'canceled' ? { type: 'run_canceled', category: 'canceled' } : { type: '', category: 'other' },
  ): Promise<boolean> {
    const reply = await this.ending(runId, key, (reqKeys, ids) =>
      this.call.finishRow([...this.rowKeys(runId, key), ...reqKeys], [outcome, reason, Date.now(), from.join(','), requestId, kind.type, kind.category, ...ids]),
    );
    return reply === 'ok';
  }

  /**
   * Gives up the current attempt: 'resubmit', or 'failed' at the run's attempt limit. `forgotten`: fal
   * no longer knows the request (it restarted, or lost it): the resubmission is counted apart in the
   * run's `resubmittedForgotten`. From 'storing' only for the current attempt's request.
   */
  async supersede(
    runId: string,
    key: string,
    from: 'submitting' | 'submitted' | 'storing',
    attempt: number,
    requestId: string | undefined,
    reason: string,
    kind: ErrorKind = { type: 'lost', category: 'fal_transient' },
    forgotten = false,
  ): Promise<'resubmit' | 'failed' | 'noop'> {
    return (await this.ending(runId, key, (reqKeys, ids) =>
      this.call.supersede([...this.rowKeys(runId, key), ...reqKeys], [from, attempt, requestId ?? '', reason, Date.now(), kind.type, kind.category, forgotten ? '1' : '', ...ids]),
    )) as 'resubmit' | 'failed' | 'noop';
  }

  async markPolled(runId: string, key: string, requestId: string, nextPollAt: number, falStatus: string, now = Date.now()): Promise<void> {
    await this.call.markPolled([keys.row(runId, key)], [requestId, nextPollAt, falStatus, now]);
  }

  /** Drops a terminal row's state after its metadata is in S3. Returns true when the run is now done. */
  async forgetRow(runId: string, key: string): Promise<boolean> {
    return (await this.call.forgetRow([keys.row(runId, key), keys.run(runId), keys.active(runId)], [key])) === 'runDone';
  }

  /** Which row (and attempt) a fal request belongs to. */
  async lookupRequest(requestId: string): Promise<{ runId: string; key: string; attempt: number } | undefined> {
    const v = await this.redis.get(keys.request(requestId));
    if (!v) return undefined;
    const [runId, key, attempt] = v.split('\n');
    if (!runId || !key) return undefined;
    return { runId, key, attempt: Number(attempt ?? 0) };
  }
}

/** A row from its hash (HGETALL's fields); undefined when the row has no state. */
function rowOf(runId: string, key: string, h: Record<string, string>): Row | undefined {
  if (!h.state) return undefined;
  const attempt = Number(h.attempt ?? 0);
  const requestIds: string[] = [];
  for (let i = 1; i <= attempt; i++) if (h[`req${i}`]) requestIds.push(h[`req${i}`]!);
  // Requests placed beside their attempt's recorded one after a Redis rollback (recordResult.lua): paid too.
  if (h.xreqs) requestIds.push(...h.xreqs.split('\n').filter(Boolean));
  return {
    runId,
    key,
    line: Number(h.line),
    ordinal: num(h.ordinal),
    state: h.state as RowState,
    attempt,
    requestId: h.requestId,
    requestIds,
    storeRequestId: h.storeRequestId,
    data: JSON.parse(h.data ?? '{}') as RowData,
    createdAt: Number(h.createdAt),
    claimedAt: num(h.claimedAt),
    submittedAt: num(h.submittedAt),
    storingSince: num(h.storingSince),
    finishedAt: num(h.finishedAt),
    deadlineAt: Number(h.deadlineAt),
    nextPollAt: num(h.nextPollAt),
    polls: Number(h.polls ?? 0),
    startedAt: h.startedFor && h.startedFor === h.requestId ? num(h.startedAt) : undefined,
    falStatus: h.falStatus,
    error: h.error,
    errorType: h.errorType,
    errorCategory: h.errorCategory as ErrorCategory | undefined,
    attemptErrors: h.attemptErrors ? (JSON.parse(h.attemptErrors) as AttemptError[]) : [],
    lastError: h.lastError,
    images: h.images ? (JSON.parse(h.images) as StoredImage[]) : undefined,
    seed: h.seed,
    prompt: h.prompt,
    cost: num(h.cost),
  };
}

/** Whether a run's selection bitmap (see selectedLines) holds a manifest line. */
export function lineSelected(bitmap: Buffer, line: number): boolean {
  return line >> 3 < bitmap.length && (bitmap[line >> 3]! & (0x80 >> (line & 7))) !== 0;
}

/** A script's reply that may carry the row's fields after its code: `code` or `[code, HGETALL…]`. */
function withRow(runId: string, key: string, reply: unknown): { decision: string; row?: Row } {
  if (!Array.isArray(reply)) return { decision: String(reply) };
  const [decision, flat] = reply as [string, string[] | undefined];
  if (!flat) return { decision };
  const h: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) h[flat[i]!] = flat[i + 1]!;
  return { decision, row: rowOf(runId, key, h) };
}

function mappingValue(runId: string, key: string, attempt: number): string {
  return `${runId}\n${key}\n${attempt}`;
}
