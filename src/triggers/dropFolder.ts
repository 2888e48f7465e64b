// The S3 drop folder (DROP_PREFIX in S3_BUCKET), polled with ListObjects. Each settled .csv/.csv.gz is
// one run whose id is derived from bucket, key and ETag, so the same upload is always the same run and a
// changed upload under the same key is another. Starting it is claimed in Redis (SET NX with a lease the
// claimer renews); startRun is idempotent for a given run id, so a claim whose scheduler died is simply
// taken again when its lease lapses: neither lost nor doubled. When the run has ended, the object moves to
// processed/<runId>/ beside the drop folder; a manifest that cannot be a run moves to failed/ with a
// .reason.txt. Everything is decided from S3 and Redis at each poll, so any scheduler, restarted or not,
// carries on where another stopped.
import { createHash, randomUUID } from 'node:crypto';
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { CopyObjectCommand, HeadObjectCommand, ListMultipartUploadsCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import type { ListedObject } from '../core/s3.ts';
import type { PortraitBatch } from '../portraitBatch.ts';
import { ManifestError } from '../manifest/index.ts';
import { triggerCommand } from './commands.ts';
import { triggerKeys } from './keys.ts';
import { finishedSummary } from '../outputs/summary.ts';

const MANIFEST = /\.csv(\.gz)?$/i;
const STARTED = 'started';

export interface DropFolderOptions {
  /** Key prefix polled, ending in / (DROP_PREFIX). */
  prefix: string;
  pollMs: number;
  /** Objects younger than this wait (DROP_SETTLE_MS). */
  settleMs: number;
  /** Lease of a claim: a dead claimer's claim is taken again this long after its last renewal. */
  claimMs: number;
  now?: () => number;
  /** False: no polling loop, the caller calls pollOnce (tests that act between polls). Default true. */
  loop?: boolean;
}

export interface DropPoll {
  started: string[];
  settled: string[];
  failed: string[];
}

export interface RunningDropFolder {
  /** One pass over the folder (the loop calls it every pollMs). */
  pollOnce(): Promise<DropPoll>;
  close(): Promise<void>;
}

/** Where an object of the drop folder goes: processed/ and failed/ sit beside the drop prefix. */
export function dropLayout(prefix: string) {
  const parent = prefix.replace(/[^/]+\/$/, '');
  const rel = (key: string) => key.slice(prefix.length);
  return {
    processed: (runId: string, key: string) => `${parent}processed/${runId}/${rel(key)}`,
    failed: (key: string) => `${parent}failed/${rel(key)}`,
    reason: (key: string) => `${parent}failed/${rel(key)}.reason.txt`,
  };
}

/** The run of one upload: readable name of the file, then a hash of bucket, key and ETag. */
export function dropRunId(bucket: string, key: string, etag: string): string {
  const base = (key.split('/').pop() ?? '').replace(/\.gz$/i, '').replace(/\.csv$/i, '');
  const name = base.replace(/[^A-Za-z0-9._-]+/g, '_').replace(/^[^A-Za-z0-9]+/, '').slice(0, 80) || 'drop';
  const hash = createHash('sha256').update(`${bucket}\n${key}\n${etag}`).digest('hex').slice(0, 16);
  return `${name}-${hash}`;
}

export function startDropFolder(pb: PortraitBatch, opts: DropFolderOptions): RunningDropFolder {
  const ctx = pb.context;
  const { storage, redis } = ctx;
  const log = ctx.logger.child({ dropFolder: `s3://${storage.bucket}/${opts.prefix}` });
  const now = opts.now ?? Date.now;
  const layout = dropLayout(opts.prefix);
  const token = `${hostname()}:${process.pid}:${randomUUID()}`;
  /** Keys of other files, logged once by this process. */
  const ignored = new Set<string>();
  /** False once the S3 answered that it does not list multipart uploads (s3rver). */
  let listsMultipart = true;

  /** Keys with a multipart upload in progress (an overwrite being written): they wait. */
  async function uploadsInProgress(): Promise<Set<string>> {
    const keys = new Set<string>();
    if (!listsMultipart) return keys;
    try {
      let keyMarker: string | undefined;
      let uploadIdMarker: string | undefined;
      for (;;) {
        const res = await storage.client.send(
          new ListMultipartUploadsCommand({ Bucket: storage.bucket, Prefix: opts.prefix, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
        );
        for (const u of res.Uploads ?? []) if (u.Key) keys.add(u.Key);
        if (!res.IsTruncated) break;
        keyMarker = res.NextKeyMarker;
        uploadIdMarker = res.NextUploadIdMarker;
      }
    } catch (err) {
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name !== 'NotImplemented' && e.$metadata?.httpStatusCode !== 501) throw err;
      // Two polls may learn it at once; it is logged once.
      if (listsMultipart) log.info('this S3 does not list multipart uploads: DROP_SETTLE_MS alone keeps objects being overwritten waiting');
      listsMultipart = false;
    }
    return keys;
  }

  async function pollOnce(): Promise<DropPoll> {
    const result: DropPoll = { started: [], settled: [], failed: [] };
    // One clock reading per poll, taken before anything is awaited: every upload of a poll is judged
    // by the moment the poll began, not by how long the listing took.
    const at = now();
    const writing = await uploadsInProgress();
    const listed: ListedObject[] = [];
    for await (const o of storage.list(opts.prefix)) listed.push(o);
    for (const o of listed) {
      if (o.key.endsWith('/')) continue;
      if (!MANIFEST.test(o.key)) {
        if (!ignored.has(o.key)) log.warn({ key: o.key }, 'not a .csv or .csv.gz manifest: left alone');
        ignored.add(o.key);
        continue;
      }
      if (writing.has(o.key) || at - o.lastModified < opts.settleMs) continue;
      try {
        const outcome = await handle(o);
        if (outcome) result[outcome].push(o.key);
      } catch (err) {
        log.error({ key: o.key, err: (err as Error).message }, 'dropped manifest not handled; the next poll tries again');
      }
    }
    return result;
  }

  async function handle(o: ListedObject): Promise<keyof DropPoll | undefined> {
    const runId = dropRunId(storage.bucket, o.key, o.etag);
    const claimKey = triggerKeys.dropClaim(runId);
    const run = await ctx.rows.getRun(runId);
    // A run whose Redis keys expired (RUN_RETENTION) ended: its summary.json says so.
    const ended = run?.finishedAt ? run : run ? undefined : await finishedSummary(ctx, runId);
    if (ended) {
      await moveTo(o, layout.processed(runId, o.key));
      await redis.del(claimKey);
      log.info({ key: o.key, runId, state: ended.state }, 'run of dropped manifest ended: moved to processed/');
      return 'settled';
    }
    // Taken by nobody else: not started and running (`started`), nor being started by a live scheduler
    // (its lease is renewed while it works; a dead one's lapses).
    if ((await redis.set(claimKey, token, 'PX', opts.claimMs, 'NX')) !== 'OK') return undefined;
    const renew = setInterval(() => {
      triggerCommand(redis, 'renewClaim', [claimKey], [token, opts.claimMs]).catch((err: Error) => log.warn({ runId, err: err.message }, 'claim not renewed'));
    }, Math.max(50, Math.floor(opts.claimMs / 3)));
    try {
      const started = await pb.startRun(`s3://${storage.bucket}/${o.key}`, { runId, extra: { drop: { bucket: storage.bucket, key: o.key, etag: o.etag } } });
      await redis.set(claimKey, STARTED);
      log.info({ key: o.key, runId, rows: started.total, resumed: started.resumed }, 'dropped manifest claimed: run started');
      return 'started';
    } catch (err) {
      if (err instanceof ManifestError && (await unchanged(o))) {
        await fail(o, err.message);
        await redis.del(claimKey);
        log.warn({ key: o.key, reason: err.message }, 'dropped manifest refused: moved to failed/');
        return 'failed';
      }
      await triggerCommand(redis, 'releaseClaim', [claimKey], [token]);
      throw err;
    } finally {
      clearInterval(renew);
    }
  }

  /** Whether the object is still the upload that was listed (it may have been replaced since). */
  async function unchanged(o: ListedObject): Promise<boolean> {
    try {
      const head = await storage.client.send(new HeadObjectCommand({ Bucket: storage.bucket, Key: o.key }));
      return (head.ETag ?? '').replace(/"/g, '') === o.etag;
    } catch {
      return false;
    }
  }

  /** Copy, then delete the source only if it is still the same upload (a new one under the key stays). */
  async function moveTo(o: ListedObject, target: string): Promise<void> {
    const source = `${storage.bucket}/${encodeURIComponent(o.key).replace(/%2F/g, '/')}`;
    try {
      await storage.client.send(new CopyObjectCommand({ Bucket: storage.bucket, Key: target, CopySource: source, CopySourceIfMatch: `"${o.etag}"` }));
    } catch (err) {
      // Another scheduler moved it a moment ago (or it was replaced: the next poll sees the new upload).
      const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
      if (e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404 || e.$metadata?.httpStatusCode === 412) return;
      throw err;
    }
    if (await unchanged(o)) await storage.remove(o.key);
  }

  async function fail(o: ListedObject, reason: string): Promise<void> {
    await storage.client.send(new PutObjectCommand({ Bucket: storage.bucket, Key: layout.reason(o.key), Body: `${reason}\n`, ContentType: 'text/plain; charset=utf-8' }));
    await moveTo(o, layout.failed(o.key));
  }

  const stopping = new AbortController();
  const loop = (async () => {
    while (opts.loop !== false && !stopping.signal.aborted) {
      await pollOnce().catch((err: Error) => log.error({ err: err.message }, 'drop folder poll failed'));
      await sleep(opts.pollMs, undefined, { signal: stopping.signal }).catch(() => undefined);
    }
  })();

  return {
    pollOnce,
    async close() {
      stopping.abort();
      await loop;
    },
  };
}

