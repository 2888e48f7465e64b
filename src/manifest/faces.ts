// Face classification: what a face cell points at (http(s) URL, data: URI, s3:// object, local file),
// or why it is refused. Faces a stranger's manifest could use to reach our files or buckets are
// refused here: a local face must really be inside the manifest's folder (links followed), and an
// s3:// face — or an http(s) URL of the service's own S3 — must be one its run may read (faceRule.ts).
import { realpathSync, statSync } from 'node:fs';
import { isAbsolute, relative, resolve, sep } from 'node:path';
import { show } from './errors.ts';
import { faceRuleRefusal, s3FaceRefusal, type S3FacePolicy } from './faceRule.ts';

export type FaceKind = 'http' | 'data' | 's3' | 'local';

export type FaceVerdict = { faceKind: FaceKind; localPath?: string } | { reason: string };

export interface FaceOptions {
  /** The manifest's folder: local faces must resolve (real path) inside it; without it they are rejected. */
  baseDir?: string;
  /** The faces the run may read from S3 (faceRule.ts); without it s3:// faces are not checked here (the worker checks again). */
  s3?: S3FacePolicy;
  /**
   * Set when the local faces were checked (and uploaded) on the machine the run was started from: face
   * cell → why it was refused there. Any other local face is taken as uploaded, without looking at
   * this machine's files, so a worker elsewhere reads the manifest exactly as the starter did.
   */
  checkedLocalFaces?: ReadonlyMap<string, string>;
}

/** Names of the face column, in order of preference when several are present. */
export const FACE_COLUMNS = ['face_url', 'image_url', 'url'] as const;
/** Extensions a local face may have (the producer uploads it with the matching content type). */
const LOCAL_IMAGE = /\.(png|jpe?g|webp)$/i;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/**
 * The image in a data: face (already classified as one): its bytes and a content type to store it
 * with. Only PNG, JPEG, WEBP and GIF keep their declared type; anything else is stored as bytes.
 */
export function decodeDataFace(url: string): { bytes: Buffer; contentType: string; ext: string } {
  const comma = url.indexOf(',');
  const mime = url.slice(5, comma).split(';', 1)[0]!.toLowerCase();
  const ext = ({ 'image/png': 'png', 'image/jpeg': 'jpg', 'image/jpg': 'jpg', 'image/webp': 'webp', 'image/gif': 'gif' } as Record<string, string>)[mime];
  return { bytes: Buffer.from(url.slice(comma + 1), 'base64'), contentType: ext ? mime : 'application/octet-stream', ext: ext ?? 'bin' };
}

/** Classifies face cells under one set of options (the manifest folder's real path is looked up once). */
export class FaceClassifier {
  private realBase: string | { reason: string } | undefined;

  constructor(private readonly opts: FaceOptions) {}

  /** One trimmed face cell → its kind (and, for a local face, its real path), or why it is refused. */
  classify(url: string): FaceVerdict {
    if (!url) return { reason: 'is empty: every row needs a face (an http(s) URL, a data:image/ URI, an s3:// URL or a local path)' };
    if (/^https?:\/\//i.test(url)) {
      let host = '';
      try {
        host = new URL(url).hostname;
      } catch {
        host = '';
      }
      if (!host) return { reason: `${show(url)} is not a valid URL` };
      const refused = this.opts.s3 && faceRuleRefusal(url, this.opts.s3);
      return refused ? { reason: refused } : { faceKind: 'http' };
    }
    if (/^data:/i.test(url)) {
      const comma = url.indexOf(',');
      const meta = comma < 0 ? '' : url.slice(0, comma);
      if (!/^data:image\/[a-z0-9.+-]+(;[a-z0-9.+-]+=[^;,]*)*;base64$/i.test(meta)) {
        return { reason: `${show(url)} is a data: URI but not a base64 image (data:image/...;base64,...)` };
      }
      if (!BASE64.test(url.slice(comma + 1))) return { reason: `${show(url)} is a data: URI whose payload is not base64` };
      return { faceKind: 'data' };
    }
    if (/^s3:\/\//i.test(url)) {
      if (!/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\/./.test(url)) return { reason: `${show(url)} is not an s3://bucket/key URL` };
      const refused = this.opts.s3 && s3FaceRefusal(url, this.opts.s3);
      return refused ? { reason: refused } : { faceKind: 's3' };
    }
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url);
    if (scheme && !/^[a-z]:[\\/]/i.test(url)) {
      return { reason: `${show(url)} has the unsupported scheme ${scheme[1]!.toLowerCase()}:; use http(s)://, data:image/...;base64, s3:// or a local path` };
    }
    return this.local(url);
  }

  private local(url: string): FaceVerdict {
    if (this.opts.checkedLocalFaces) {
      const refused = this.opts.checkedLocalFaces.get(url);
      return refused ? { reason: refused } : { faceKind: 'local', localPath: resolve(this.opts.baseDir ?? '/', url) };
    }
    const base = this.base();
    if (typeof base !== 'string') return { reason: `local path ${show(url)} cannot be resolved: ${base.reason}` };
    const lexical = resolve(base, url);
    if (!LOCAL_IMAGE.test(lexical)) return { reason: `local file ${show(url)} is not a .png, .jpg, .jpeg or .webp image` };
    if (!inside(base, lexical)) return { reason: `local file ${show(url)} is outside the manifest's folder (local faces must be in it or a subfolder)` };
    // Reasons name the file relative to the manifest's folder: reports never hold the producer's paths.
    const where = `${show(relative(base, lexical))} in the manifest's folder`;
    let stat;
    try {
      stat = statSync(lexical, { throwIfNoEntry: false });
    } catch (err) {
      return { reason: `local file ${show(url)} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}; ${where})` };
    }
    if (!stat) return { reason: `local file ${show(url)} does not exist (${where})` };
    if (!stat.isFile()) return { reason: `local file ${show(url)} is not a regular file (${where})` };
    let real: string;
    try {
      real = realpathSync(lexical);
    } catch (err) {
      return { reason: `local file ${show(url)} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}; ${where})` };
    }
    if (!inside(base, real)) return { reason: `local file ${show(url)} is a link to a file outside the manifest's folder` };
    return { faceKind: 'local', localPath: real };
  }

  /** The real path of the manifest's folder, or why local faces cannot be resolved. */
  private base(): string | { reason: string } {
    if (this.realBase === undefined) {
      const dir = this.opts.baseDir;
      if (dir === undefined) this.realBase = { reason: "the manifest's folder is not known" };
      else {
        try {
          this.realBase = realpathSync(dir);
        } catch (err) {
          this.realBase = { reason: `the manifest's folder cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})` };
        }
      }
    }
    return this.realBase;
  }
}

/** True when `path` is `dir` itself or below it (both absolute, real or lexical alike). */
function inside(dir: string, path: string): boolean {
  const rel = relative(dir, path);
  return rel !== '' && rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
}
