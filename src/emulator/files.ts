// Generated files, kept in memory and served like fal's CDN: GET /files/<token>/<name>.<ext> with
// the right Content-Type and Content-Length, no credentials needed; a fault may answer 500.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, join } from 'node:path';
import { chance, type EmulatorFaults } from './faults.ts';
import { sendJson } from './http.ts';
import type { EmulatorStats } from './stats.ts';

interface StoredFile {
  data: Buffer;
  contentType: string;
}

export class FileStore {
  private readonly files = new Map<string, StoredFile>();

  constructor(
    private readonly baseUrl: () => string,
    private readonly stats: EmulatorStats,
    private readonly random: () => number,
    private readonly faults: () => EmulatorFaults,
    /** Also keep files on disk here, so a restarted emulator still serves them (embedded stack). */
    private readonly dir?: string,
  ) {}

  /** Keeps a file and returns its public URL. */
  put(data: Buffer, contentType: string, fileName: string): string {
    const token = newToken();
    this.putAt(token, fileName, data, contentType);
    return this.urlOf(token, fileName);
  }

  /** Keeps a file under a token handed out earlier (fal.storage: initiate, then PUT). */
  putAt(token: string, fileName: string, data: Buffer, contentType: string): void {
    this.files.set(`${token}/${fileName}`, { data, contentType });
    if (this.dir && safeName(token, fileName)) {
      mkdirSync(join(this.dir, token), { recursive: true });
      writeFileSync(join(this.dir, token, fileName), data);
    }
  }

  /** A file of this process, or one an earlier emulator on the same directory kept. */
  private lookup(token: string, name: string): StoredFile | undefined {
    const file = this.files.get(`${token}/${name}`);
    if (file || !this.dir || !safeName(token, name)) return file;
    try {
      return { data: readFileSync(join(this.dir, token, name)), contentType: CONTENT_TYPES[extname(name).toLowerCase()] ?? 'application/octet-stream' };
    } catch {
      return undefined;
    }
  }

  urlOf(token: string, fileName: string): string {
    return `${this.baseUrl()}/files/${token}/${encodeURIComponent(fileName)}`;
  }

  /** The bytes behind one of this store's own URLs (query ignored), without a network call. */
  bytesOf(url: string): Buffer | undefined {
    const prefix = `${this.baseUrl()}/files/`;
    if (!url.startsWith(prefix)) return undefined;
    const [token, name, ...rest] = url.slice(prefix.length).split('?')[0]!.split('/');
    if (!token || !name || rest.length > 0) return undefined;
    try {
      return this.lookup(token, decodeURIComponent(name))?.data;
    } catch {
      return undefined;
    }
  }

  get size(): number {
    return this.files.size;
  }

  /** Answers GET/HEAD /files/<token>/<name>; `parts` are the decoded path segments. */
  serve(req: IncomingMessage, res: ServerResponse, parts: string[]): void {
    this.stats.fileGets++;
    if (chance(this.random, this.faults().imageDownloadFailureRate)) {
      this.stats.fileFailures++;
      sendJson(res, 500, { detail: 'Internal Server Error: storage backend unavailable' });
      return;
    }
    const file = parts.length === 3 ? this.lookup(parts[1]!, parts[2]!) : undefined;
    if (!file) {
      sendJson(res, 404, { detail: 'File not found' });
      return;
    }
    res.writeHead(200, {
      'content-type': file.contentType,
      'content-length': file.data.length,
      'cache-control': 'public, max-age=31536000, immutable',
    });
    res.end(req.method === 'HEAD' ? undefined : file.data);
  }

  clear(): void {
    this.files.clear();
  }
}

const CONTENT_TYPES: Record<string, string> = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.webp': 'image/webp' };

/** Tokens are hex and names plain file names: nothing outside the directory can be named. */
const safeName = (token: string, name: string) => /^[0-9a-f]{24}$/.test(token) && /^[\w.-]+$/.test(name) && name !== '.' && name !== '..';

export function newToken(): string {
  return randomBytes(12).toString('hex');
}
