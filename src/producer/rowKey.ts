/** Keys generated for rows without an id; ids of this form are reserved so the two never collide. */
export const GENERATED_KEY = /^line-\d+$/;

/** An S3-safe row key from a manifest id: [A-Za-z0-9._-], at most 128 characters, never . or .. */
export function toRowKey(id: string): string {
  let key = id
    .normalize('NFKC')
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/_+/g, '_')
    .slice(0, 128);
  if (key === '.' || key === '..') key = key.replace(/\./g, '_');
  return key || '_';
}

export const lineKey = (line: number) => `line-${line}`;
