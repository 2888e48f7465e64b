// Containment of every file written from names we did not choose: an S3 key becomes a path under the
// folder it is copied into only if it names a file there. S3 (AWS, MinIO) accepts any key, so a key
// such as `runs/r1/images/a/../../../../x` reaches a download as it was written; joined to the folder
// as it is, it would be written outside. Every writer of such paths (download, the demo's copy, the
// contact sheet's links, `report --out`) goes through here.
import { basename, dirname, isAbsolute, relative, resolve, sep } from 'node:path';

/** A name refused as a path under a folder: `name` is what was asked for (the key), `reason` why. */
export class ContainmentError extends Error {
  override name = 'ContainmentError';
  constructor(
    readonly key: string,
    readonly reason: string,
  ) {
    super(`${JSON.stringify(key)} ${reason}: not written`);
  }
}

/**
 * Why a relative name (`a/b/c.png`) may not name a file under a folder, or undefined when it may:
 * every `/`-separated segment must be a plain name — not empty, `.` or `..`, with no backslash, NUL,
 * or drive letter (`C:`), and the name not absolute.
 */
export function pathRefusal(name: string): string | undefined {
  if (name === '') return 'is empty';
  if (name.startsWith('/') || isAbsolute(name)) return 'is an absolute path';
  if (name.includes('\\')) return 'has a backslash';
  if (name.includes('\0')) return 'has a NUL byte';
  for (const s of name.split('/')) {
    if (s === '') return 'has an empty segment (//, or a trailing /)';
    if (s === '.' || s === '..') return `has a ${s} segment`;
    if (/^[a-z]:/i.test(s)) return 'has a drive letter';
  }
  return undefined;
}

/**
 * The absolute path of `name` under `dir`, checked to be inside it after resolving; throws
 * ContainmentError naming `key` (the S3 key it came from, or `name`) otherwise.
 */
export function containedPath(dir: string, name: string, key = name): string {
  const refused = pathRefusal(name);
  if (refused) throw new ContainmentError(key, refused);
  const base = resolve(dir);
  const path = resolve(base, name);
  const rel = relative(base, path);
  // Belt and braces: what the segment check lets through must still resolve below the folder.
  if (rel === '' || rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) throw new ContainmentError(key, `resolves outside ${base}`);
  return path;
}

/**
 * A file the operator named (`report --out`): resolved once against the working directory, and its
 * own name checked (not empty, `.` or `..`, not a folder path ending in /): nothing read from S3 is
 * joined to it.
 */
export function outputFile(path: string): string {
  const full = resolve(path);
  if (/[/\\]$/.test(path)) throw new ContainmentError(path, 'names a folder, not a file');
  return containedPath(dirname(full), basename(full), path);
}
