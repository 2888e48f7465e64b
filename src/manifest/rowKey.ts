// Row keys: how a manifest row is named in Redis and S3 (images/<key>/, meta/<key>.json).
// A row with an id is keyed by the id made S3-safe; a row without one by the line it starts on.
import { createHash } from 'node:crypto';

/** Longest row key. */
export const MAX_ROW_KEY = 128;

/** Keys generated for rows without an id. Ids of this form (any case) are reserved so the two never collide. */
export const GENERATED_KEY = /^line-\d+$/i;

/** Hex digits of the id's hash a lossy key ends with. */
const HASH_CHARS = 10;

/**
 * An S3-safe row key from a manifest id. An id already made of [A-Za-z0-9._-] (at most 128
 * characters, not `.` or `..`) is its own key. Any other id is lossy: it is NFKC-normalised, every
 * run of other characters becomes one `_`, it is cut short, and `_` plus a short hash of the id is
 * appended, so distinct ids (田中, محمد) get distinct keys. The reader still rejects a repeated key.
 */
export function toRowKey(id: string): string {
  if (SAFE_KEY.test(id) && id !== '.' && id !== '..') return id;
  const readable = id
    .normalize('NFKC')
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/_{2,}/g, '_')
    .slice(0, MAX_ROW_KEY - HASH_CHARS - 1)
    .replace(/^\.{1,2}$/, '')
    .replace(/_+$/, '');
  return `${readable}_${createHash('sha256').update(id).digest('hex').slice(0, HASH_CHARS)}`;
}

const SAFE_KEY = new RegExp(`^[A-Za-z0-9._-]{1,${MAX_ROW_KEY}}$`);

/** The key of a row without an id: `line-N`, N the line its record starts on. */
export const lineKey = (line: number): string => `line-${line}`;

/** True for ids that would read as generated keys (`line-<digits>`), which manifests may not use. */
export const isReservedId = (idOrKey: string): boolean => GENERATED_KEY.test(idOrKey);
