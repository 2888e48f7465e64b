// The row state machine. Every change of row or run state is one atomic Lua command from
// ./commands (one file per transition); nothing else writes row state. Run counters are updated only
// inside those commands, guarded by the row's done bit, so they cannot drift from the rows.
import { readFileSync } from 'node:fs';
import type { Redis } from 'ioredis';
import { keys, REQUEST_MAPPING_TTL_SECONDS, type RowState, type RunState } from './keys.ts';

const COMMANDS = {
  claimSubmit: 4,
  releaseSubmit: 2,
  recordSubmit: 2,
  recordResult: 5,
  completeRow: 4,
  finishRow: 4,
  supersede: 4,
  markPolled: 1,
  forgetRow: 3,
  admitBatch: 3,
  finishProducing: 2,
} as const;
type CommandName = keyof typeof COMMANDS;

const lib = readFileSync(new URL('./commands/_lib.lua', import.meta.url), 'utf8');
const scripts = Object.fromEntries(
  Object.keys(COMMANDS).map((name) => [name, `${lib}\n${readFileSync(new URL(`./commands/${name}.lua`, import.meta.url), 'utf8')}`]),
) as Record<CommandName, string>;
if (!lib.includes(`MAPPING_TTL = ${REQUEST_MAPPING_TTL_SECONDS}`)) throw new Error('commands/_lib.lua MAPPING_TTL is out of step with keys.ts');

type Call = (...args: (string | number)[]) => Promise<unknown>;

/** What a row carries from the manifest into its state (kept while the row is in flight). */
export interface RowData {
  id?: string;
  faceUrl: string;
  faceKind: 'http' | 'data' | 's3' | 'local';
  /** S3 key of an uploaded local face. */
  faceObjectKey?: string;
  input: Record<string, unknown>;
  extra: Record<string, string>;
}

export interface Row {
  runId: string;
  key: string;
  line: number;
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
  error?: string;
  lastError?: string;
  images?: StoredImage[];
  seed?: string;
  prompt?: string;
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
  stopReason?: string;
  options: Record<string, unknown>;
}

export interface Thresholds {
  minRows: number;
  ratio: number;
}

const num = (v: string | undefined) => (v === undefined || v === '' ? undefined : Number(v));

export class RowStore {
  private readonly call: Record<CommandName, Call>;

  constructor(
    readonly redis: Redis,
    private readonly thresholds: Thresholds,
  ) {
    const r = redis as unknown as Record<string, Call>;
    for (const [name, numberOfKeys] of Object.entries(COMMANDS) as [CommandName, number][]) {
      if (!r[`pb_${name}`]) redis.defineCommand(`pb_${name}`, { numberOfKeys, lua: scripts[name] });
    }
    this.call = Object.fromEntries(
      Object.keys(COMMANDS).map((name) => [name, (...args: (string | number)[]) => r[`pb_${name}`]!.apply(redis, args)]),
    ) as Record<CommandName, Call>;
  }

  private rowKeys(runId: string, key: string) {
    return [keys.row(runId, key), keys.run(runId), keys.done(runId), keys.active(runId)];
  }

  private get t() {
    return [this.thresholds.minRows, this.thresholds.ratio] as const;
  }

  // ---- runs -------------------------------------------------------------------------------

  /** Creates the run if it does not exist; returns true when it was created. */
  async createRun(run: { runId: string; manifest: string; manifestKey: string; options: Record<string, unknown> }): Promise<boolean> {
    const created = await this.redis.hsetnx(keys.run(run.runId), 'runId', run.runId);
    if (created) {
      const now = Date.now();
      await this.redis
        .multi()
        .hset(keys.run(run.runId), {
          state: 'running',
          createdAt: now,
          manifest: run.manifest,
          manifestKey: run.manifestKey,
          options: JSON.stringify(run.options),
          cursor: 0,
          queued: 0,
          completed: 0,
          failed: 0,
          rejected: 0,
          canceled: 0,
          submits: 0,
          producerDone: 0,
        })
        .zadd(keys.runs(), now, run.runId)
        .sadd(keys.activeRuns(), run.runId)
        .exec();
    }
    return created === 1;
  }

  async getRun(runId: string): Promise<RunRecord | undefined> {
    const h = await this.redis.hgetall(keys.run(runId));
    if (!h.runId || !h.state) return undefined;
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
      stopReason: h.stopReason,
      options: h.options ? (JSON.parse(h.options) as Record<string, unknown>) : {},
    };
  }

  /** Rows of the run that are queued but not yet terminal (what the producer's window counts). */
  async inFlight(runId: string): Promise<number> {
    const [queued, completed, failed, canceled] = await this.redis.hmget(keys.run(runId), 'queued', 'completed', 'failed', 'canceled');
    return Number(queued ?? 0) - Number(completed ?? 0) - Number(failed ?? 0) - Number(canceled ?? 0);
  }

  async admitBatch(runId: string, cursor: number, queuedCount: number, rejected: { line: number; reason: string }[]): Promise<boolean> {
    const pairs = rejected.flatMap((r) => [r.line, r.reason]);
    return (await this.call.admitBatch(keys.run(runId), keys.done(runId), keys.rejected(runId), cursor, queuedCount, ...pairs)) === 1;
  }

  /** Why rejected rows were rejected, by manifest line. */
  async rejectedReasons(runId: string, lines: number[]): Promise<(string | null)[]> {
    if (!lines.length) return [];
    return this.redis.hmget(keys.rejected(runId), ...lines.map(String));
  }

  /** Returns true when the run has nothing left in flight. */
  async finishProducing(runId: string, total: number): Promise<boolean> {
    return (await this.call.finishProducing(keys.run(runId), keys.active(runId), total)) === 'runDone';
  }

  async markRunFinished(runId: string, state: RunState): Promise<void> {
    await this.redis.multi().hset(keys.run(runId), 'state', state, 'finishedAt', Date.now()).srem(keys.activeRuns(), runId).exec();
  }

  async activeRunIds(): Promise<string[]> {
    return this.redis.smembers(keys.activeRuns());
  }

  async activeRowKeys(runId: string): Promise<string[]> {
    return this.redis.smembers(keys.active(runId));
  }

  async isDone(runId: string, line: number): Promise<boolean> {
    return (await this.redis.getbit(keys.done(runId), line)) === 1;
  }

  // ---- rows -------------------------------------------------------------------------------

  async getRow(runId: string, key: string): Promise<Row | undefined> {
    const h = await this.redis.hgetall(keys.row(runId, key));
    if (!h.state) return undefined;
    const attempt = Number(h.attempt ?? 0);
    const requestIds: string[] = [];
    for (let i = 1; i <= attempt; i++) if (h[`req${i}`]) requestIds.push(h[`req${i}`]!);
    return {
      runId,
      key,
      line: Number(h.line),
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
      error: h.error,
      lastError: h.lastError,
      images: h.images ? (JSON.parse(h.images) as StoredImage[]) : undefined,
      seed: h.seed,
      prompt: h.prompt,
    };
  }

  async claimSubmit(
    runId: string,
    key: string,
    line: number,
    data: RowData,
    opts: { deadlineMs: number; maxAttempts: number },
  ): Promise<{ outcome: 'submit'; attempt: number } | { outcome: 'terminal' | 'norun' | 'canceled' | 'failed' | 'inflight' | 'already'; detail?: string }> {
    const [outcome, detail] = (await this.call.claimSubmit(
      ...this.rowKeys(runId, key),
      line,
      key,
      Date.now(),
      opts.deadlineMs,
      opts.maxAttempts,
      JSON.stringify(data),
      ...this.t,
    )) as [string, string | undefined];
    if (outcome === 'submit') return { outcome, attempt: Number(detail) };
    return { outcome: outcome as 'terminal', detail };
  }

  async releaseSubmit(runId: string, key: string, attempt: number, error: string): Promise<boolean> {
    return (await this.call.releaseSubmit(keys.row(runId, key), keys.run(runId), attempt, error)) === 'ok';
  }

  async recordSubmit(runId: string, key: string, attempt: number, requestId: string, nextPollAt: number): Promise<'ok' | 'late' | 'gone'> {
    return (await this.call.recordSubmit(
      keys.row(runId, key),
      keys.request(requestId),
      requestId,
      attempt,
      Date.now(),
      mappingValue(runId, key, attempt),
      nextPollAt,
    )) as 'ok' | 'late' | 'gone';
  }

  async recordResult(
    runId: string,
    key: string,
    result: { requestId: string; hintAttempt?: number; status: 'OK' | 'ERROR'; error?: string },
  ): Promise<'store' | 'failed' | 'duplicate' | 'ignored' | 'unknown'> {
    return (await this.call.recordResult(
      ...this.rowKeys(runId, key),
      keys.request(result.requestId),
      result.requestId,
      result.hintAttempt ?? '',
      result.status,
      Date.now(),
      result.error ?? 'fal reported an error',
      ...this.t,
      mappingValue(runId, key, result.hintAttempt ?? 0),
    )) as 'store' | 'failed' | 'duplicate' | 'ignored' | 'unknown';
  }

  async completeRow(runId: string, key: string, requestId: string, images: StoredImage[], seed: string, prompt: string): Promise<boolean> {
    return (
      (await this.call.completeRow(...this.rowKeys(runId, key), requestId, Date.now(), JSON.stringify(images), seed, prompt, ...this.t)) === 'ok'
    );
  }

  /** Ends an open row as failed/canceled if it is in one of `from` (and about `requestId`, when given). */
  async finishRow(
    runId: string,
    key: string,
    outcome: 'failed' | 'canceled',
    reason: string,
    from: RowState[],
    requestId = '',
  ): Promise<boolean> {
    return (
      (await this.call.finishRow(...this.rowKeys(runId, key), outcome, reason, Date.now(), from.join(','), requestId, ...this.t)) === 'ok'
    );
  }

  async supersede(
    runId: string,
    key: string,
    from: 'submitting' | 'submitted',
    attempt: number,
    requestId: string | undefined,
    reason: string,
    maxAttempts: number,
  ): Promise<'resubmit' | 'failed' | 'noop'> {
    return (await this.call.supersede(
      ...this.rowKeys(runId, key),
      from,
      attempt,
      requestId ?? '',
      reason,
      maxAttempts,
      Date.now(),
      ...this.t,
    )) as 'resubmit' | 'failed' | 'noop';
  }

  async markPolled(runId: string, key: string, requestId: string, nextPollAt: number, falStatus: string): Promise<void> {
    await this.call.markPolled(keys.row(runId, key), requestId, nextPollAt, falStatus);
  }

  /** Drops a terminal row's state after its metadata is in S3. Returns true when the run is now done. */
  async forgetRow(runId: string, key: string): Promise<boolean> {
    return (await this.call.forgetRow(keys.row(runId, key), keys.run(runId), keys.active(runId), key)) === 'runDone';
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

function mappingValue(runId: string, key: string, attempt: number): string {
  return `${runId}\n${key}\n${attempt}`;
}
