// What the rows of a manifest point at, as one hash: the same CSV bytes in another folder name other
// local files, so the run id must tell them apart. Local faces are hashed by content (a copied or
// moved folder with the same files is the same run); other faces are named by the CSV itself.
import { createHash, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { isRejected, type ManifestRow } from './row.ts';

export class InputsDigest {
  private readonly hash: Hash = createHash('sha256');
  private localFaces = 0;

  /** Adds one row, in manifest order: a valid local face by its line and file content. */
  async add(row: ManifestRow): Promise<void> {
    if (isRejected(row) || row.faceKind !== 'local' || !row.localPath) return;
    this.localFaces++;
    this.hash.update(`${row.line}\0${await sha256OfFile(row.localPath)}\n`);
  }

  /** The digest, or undefined when no row names a local face (the CSV bytes alone say it all). */
  digest(): string | undefined {
    return this.localFaces ? this.hash.digest('hex') : undefined;
  }
}

async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
