// Face classification: what a face cell points at (http(s) URL, data: URI, s3:// object, local file),
// or why it is refused.
import { statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import { show } from './errors.ts';

export type FaceKind = 'http' | 'data' | 's3' | 'local';

export type FaceVerdict = { faceKind: FaceKind; localPath?: string } | { reason: string };

export interface FaceOptions {
  /** Directory relative local face paths are resolved against; without it they are rejected. */
  baseDir?: string;
}

/** Names of the face column, in order of preference when several are present. */
export const FACE_COLUMNS = ['face_url', 'image_url', 'url'] as const;
/** Extensions a local face may have (the producer uploads it with the matching content type). */
const LOCAL_IMAGE = /\.(png|jpe?g|webp)$/i;
const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** One trimmed face cell → its kind (and, for a local face, its absolute path), or why it is refused. */
export function classifyFace(url: string, opts: FaceOptions): FaceVerdict {
  if (!url) return { reason: 'is empty: every row needs a face (an http(s) URL, a data:image/ URI, an s3:// URL or a local path)' };
  if (/^https?:\/\//i.test(url)) {
    let host = '';
    try {
      host = new URL(url).hostname;
    } catch {
      host = '';
    }
    return host ? { faceKind: 'http' } : { reason: `${show(url)} is not a valid URL` };
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
    return { faceKind: 's3' };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url);
  if (scheme && !/^[a-z]:[\\/]/i.test(url)) {
    return { reason: `${show(url)} has the unsupported scheme ${scheme[1]!.toLowerCase()}:; use http(s)://, data:image/...;base64, s3:// or a local path` };
  }
  const baseDir = opts.baseDir;
  if (baseDir === undefined && !isAbsolute(url)) return { reason: `local path ${show(url)} cannot be resolved: no base directory is known` };
  const localPath = resolve(baseDir ?? '/', url);
  if (!LOCAL_IMAGE.test(localPath)) return { reason: `local file ${show(url)} is not a .png, .jpg, .jpeg or .webp image` };
  let stat;
  try {
    stat = statSync(localPath, { throwIfNoEntry: false });
  } catch (err) {
    return { reason: `local file ${show(url)} cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'}; resolved to ${localPath})` };
  }
  if (!stat) return { reason: `local file ${show(url)} does not exist (resolved to ${localPath})` };
  if (!stat.isFile()) return { reason: `local file ${show(url)} is not a regular file (resolved to ${localPath})` };
  return { faceKind: 'local', localPath };
}
