// The pictures of the gallery, served by the dashboard itself so its CSP needs no `img-src` but
// 'self', and viewing a run tells no other host who looks. A face is fetched only as its row allows:
// an s3:// face only through the face rule (then with the service's credentials), an http(s) face
// only from a public address (download.ts: every redirect hop checked, the socket connected to the
// address checked), a data: or local face from the copy the producer stored; every body at most
// policy.dashboard.thumbnailMaxBytes, within thumbnailTimeoutMs, and only PNG, JPEG or WEBP by its
// first bytes. The page names each face by a link signed for its run and row, so the route fetches
// only faces the dashboard itself listed, never a URL a visitor makes up. Portraits are read from the
// run's own images/ folder.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { extname } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Response } from 'express';
import type { Context } from '../../core/context.ts';
import { DownloadError } from '../../core/errors.ts';
import { runLayout } from '../../core/layout.ts';
import type { RunRecord } from '../../core/rowState.ts';
import { faceRuleRefusal, s3FacePolicy, storedFaceRule } from '../../manifest/faceRule.ts';
import { decodeDataFace } from '../../manifest/faces.ts';
import { openImage } from '../../core/download.ts';
import { contentTypeOf, sniffImageFormat, SNIFF_BYTES, type ImageFormat } from '../../core/imageType.ts';
import type { RowView } from './rows.ts';

/**
 * The face rule of the dashboard: why this run may not read an s3:// face, or undefined when it may.
 * The same rule as the producer and the worker apply (one call, so a change of the rule changes all).
 */
export function dashboardFaceRefusal(ctx: Context, run: RunRecord, faceUrl: string): string | undefined {
  return faceRuleRefusal(faceUrl, s3FacePolicy(ctx.cfg, storedFaceRule(run.options)));
}

/** A face's source as the page names it: an http(s) or s3:// URL, or `input:<ext>` for the stored copy of a data: or local face. */
function faceSource(run: RunRecord, row: RowView): string | undefined {
  const f = row.faceUrl;
  if (/^https?:\/\//i.test(f) || /^s3:\/\//i.test(f)) return f;
  if (/^data:image\/(png|jpe?g|webp);base64,/i.test(f)) return `input:.${decodeDataFace(f).ext}`;
  if (run.options.localFaces && f && !/^[a-z][a-z0-9+.-]*:/i.test(f)) {
    const ext = extname(f).toLowerCase();
    return /^\.(png|jpe?g|webp)$/.test(ext) ? `input:${ext}` : undefined;
  }
  return undefined;
}

export interface Thumbnails {
  /** The path the page loads a row's face from, or undefined when there is nothing this run may show. */
  faceSrc(ctx: Context, run: RunRecord, row: RowView): string | undefined;
  /** The path of a stored portrait of the run, or undefined for a key outside the run's images/. */
  portraitSrc(ctx: Context, run: RunRecord, key: string): string | undefined;
  sendFace(ctx: Context, run: RunRecord, rowKey: string, src: unknown, sig: unknown, res: Response): Promise<void>;
  sendPortrait(ctx: Context, run: RunRecord, rest: string, res: Response): Promise<void>;
}

/** Row keys as rowKey.ts makes them (never `.` or `..`). */
const ROW_KEY = /^(?!\.{1,2}$)[\w.-]{1,200}$/;
const PORTRAIT_FILE = /^(?!\.{1,2}\/)[\w.-]{1,200}\/\d{1,4}\.(png|jpg|jpeg|webp)$/;

export function thumbnails(key: string): Thumbnails {
  const sign = (runId: string, rowKey: string, src: string) => createHmac('sha256', key).update(`${runId}\n${rowKey}\n${src}`).digest('base64url');
  const signed = (runId: string, rowKey: string, src: string, sig: string) => {
    const a = Buffer.from(sign(runId, rowKey, src));
    const b = Buffer.from(sig);
    return a.length === b.length && timingSafeEqual(a, b);
  };
  return {
    faceSrc(ctx, run, row) {
      const src = faceSource(run, row);
      if (!src || !ROW_KEY.test(row.key)) return undefined;
      if (dashboardFaceRefusal(ctx, run, src)) return undefined;
      const q = new URLSearchParams({ src, sig: sign(run.runId, row.key, src) });
      return `/ui/runs/${encodeURIComponent(run.runId)}/faces/${encodeURIComponent(row.key)}?${q}`;
    },
    portraitSrc(ctx, run, imageKey) {
      const prefix = `${runLayout(ctx.cfg.S3_PREFIX, run.runId).base}images/`;
      if (!imageKey.startsWith(prefix) || !PORTRAIT_FILE.test(imageKey.slice(prefix.length))) return undefined;
      return `/ui/runs/${encodeURIComponent(run.runId)}/images/${imageKey.slice(prefix.length)}`;
    },
    async sendFace(ctx, run, rowKey, src, sig, res) {
      if (typeof src !== 'string' || typeof sig !== 'string' || !ROW_KEY.test(rowKey) || !signed(run.runId, rowKey, src, sig)) {
        return void res.status(404).type('text/plain').send('no such face: the dashboard lists the faces it shows\n');
      }
      const limits = ctx.policy.dashboard;
      try {
        const image = await openFace(ctx, run, rowKey, src, limits.thumbnailMaxBytes, limits.thumbnailTimeoutMs);
        await sendImage(res, image);
      } catch (err) {
        refuse(res, err);
      }
    },
    async sendPortrait(ctx, run, rest, res) {
      if (!PORTRAIT_FILE.test(rest)) return void res.status(404).type('text/plain').send('no such portrait\n');
      const limits = ctx.policy.dashboard;
      try {
        const imageKey = `${runLayout(ctx.cfg.S3_PREFIX, run.runId).base}images/${rest}`;
        // Portraits were checked when stored (MAX_IMAGE_BYTES); the thumbnail limit is not theirs.
        await sendImage(res, await openS3Image(ctx, ctx.storage.bucket, imageKey, Math.max(ctx.cfg.MAX_IMAGE_BYTES, limits.thumbnailMaxBytes), limits.thumbnailTimeoutMs));
      } catch (err) {
        refuse(res, err);
      }
    },
  };
}

interface Image {
  body: Readable;
  format: ImageFormat;
}

async function openFace(ctx: Context, run: RunRecord, rowKey: string, src: string, maxBytes: number, timeoutMs: number): Promise<Image> {
  if (/^https?:\/\//i.test(src)) {
    const refused = dashboardFaceRefusal(ctx, run, src);
    if (refused) throw new DownloadError(refused, true);
    const opened = await openImage(src, { allowedHosts: [], anyPublicHost: true, maxBytes, timeoutMs });
    return { body: opened.body, format: opened.format };
  }
  if (src.startsWith('s3://')) {
    const refused = dashboardFaceRefusal(ctx, run, src);
    if (refused) throw new DownloadError(refused, true);
    const m = /^s3:\/\/([^/]+)\/(.+)$/.exec(src)!;
    return openS3Image(ctx, m[1]!, m[2]!, maxBytes, timeoutMs);
  }
  const ext = /^input:(\.(?:png|jpe?g|webp))$/.exec(src)?.[1];
  if (!ext) throw new DownloadError('not a face source', true);
  // Data: faces are stored under the run itself, local ones under the run that uploaded them (a retry's original).
  const runs = [...new Set([run.runId, String(run.options.facesRunId ?? run.runId)])];
  let last: unknown;
  for (const r of runs) {
    try {
      return await openS3Image(ctx, ctx.storage.bucket, runLayout(ctx.cfg.S3_PREFIX, r).input(rowKey, ext), maxBytes, timeoutMs);
    } catch (err) {
      last = err;
    }
  }
  throw last;
}

/** An S3 object as an image: at most maxBytes, within timeoutMs, PNG, JPEG or WEBP by its first bytes. */
async function openS3Image(ctx: Context, bucket: string, key: string, maxBytes: number, timeoutMs: number): Promise<Image> {
  const { body, length } = await ctx.storage.getLimited(key, bucket, AbortSignal.timeout(timeoutMs));
  if (length !== undefined && length > maxBytes) {
    body.destroy();
    throw new DownloadError(`the face is ${length} bytes, over the ${maxBytes}-byte thumbnail limit`, true);
  }
  return checkedImage(body, maxBytes, `s3://${bucket}/${key}`);
}

/** The body with its first bytes checked and its length counted as it streams. */
async function checkedImage(body: Readable, maxBytes: number, what: string): Promise<Image> {
  const it = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  const head: Buffer[] = [];
  let seen = 0;
  while (seen < SNIFF_BYTES) {
    const next = await it.next();
    if (next.done) break;
    head.push(next.value);
    seen += next.value.length;
  }
  const format = sniffImageFormat(Buffer.concat(head));
  if (!format) {
    body.destroy();
    throw new DownloadError(`${what} is not a PNG, JPEG or WEBP image`, true);
  }
  async function* rest(): AsyncGenerator<Buffer> {
    yield* head;
    for (;;) {
      const next = await it.next();
      if (next.done) return;
      seen += next.value.length;
      if (seen > maxBytes) throw new DownloadError(`${what} exceeded the ${maxBytes}-byte thumbnail limit`, true);
      yield next.value;
    }
  }
  const out = Readable.from(rest(), { objectMode: false });
  out.once('close', () => body.destroy());
  if (seen > maxBytes) throw new DownloadError(`${what} exceeded the ${maxBytes}-byte thumbnail limit`, true);
  return { body: out, format };
}

async function sendImage(res: Response, image: Image): Promise<void> {
  res.status(200).set({
    'Content-Type': contentTypeOf(image.format),
    // A picture of a finished row does not change; kept by this browser only.
    'Cache-Control': 'private, max-age=600',
    'Content-Security-Policy': "default-src 'none'; sandbox",
  });
  // A body cut part-way (over the limit, a dropped read) ends the answer short: the browser shows no picture.
  await pipeline(image.body, res).catch(() => res.destroy());
}

function refuse(res: Response, err: unknown): void {
  const why = err instanceof Error ? err.message : String(err);
  const missing = (err as { name?: string }).name === 'NoSuchKey';
  res.status(404).type('text/plain').send(`no preview: ${missing ? 'the picture is not stored' : why}\n`);
}
