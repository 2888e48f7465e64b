// Row keys: how a manifest row is named in Redis and S3 (images/<key>/, meta/<key>.json).
// A row with an id is keyed by the id made S3-safe; a row without one by the line it starts on.

/** Longest row key. */
export const MAX_ROW_KEY = 128;

/** Keys generated for rows without an id. Ids of this form (any case) are reserved so the two never collide. */
export const GENERATED_KEY = /^line-\d+$/i;

/**
 * An S3-safe row key from a manifest id: NFKC-normalised, every run of characters outside
 * [A-Za-z0-9._-] replaced by one `_`, runs of `_` collapsed, cut to 128 characters; never `.`, `..`
 * or empty. Different ids can map to the same key; the manifest reader rejects the later row.
 */
export function toRowKey(id: string): string {
  let key = id
    .normalize('NFKC')
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/_{2,}/g, '_')
    .slice(0, MAX_ROW_KEY);
  if (key === '.' || key === '..') key = key.replace(/\./g, '_');
  return key || '_';
}

/** The key of a row without an id: `line-N`, N the line its record starts on. */
export const lineKey = (line: number): string => `line-${line}`;

/** True for ids that would read as generated keys (`line-<digits>`), which manifests may not use. */
export const isReservedId = (idOrKey: string): boolean => GENERATED_KEY.test(idOrKey);
