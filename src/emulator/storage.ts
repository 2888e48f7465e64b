// fal storage as the official client's `fal.storage.upload` speaks it: POST
// {rest}/storage/upload/initiate?storage_type=fal-cdn-v3 with {content_type, file_name} answers
// {upload_url, file_url}; the client PUTs the bytes to upload_url and hands file_url to the model.
// Uploaded files are served from /files like generated ones. (Multipart uploads, used above 90 MB,
// are not emulated: faces are far smaller.)
import type { IncomingMessage, ServerResponse } from 'node:http';
import { sendJson, readBody } from './http.ts';
import { newToken, type FileStore } from './files.ts';
import type { EmulatorStats } from './stats.ts';

const MAX_UPLOAD = 90 * 1024 * 1024;

interface PendingUpload {
  fileName: string;
  contentType: string;
}

export class StorageUploads {
  private readonly pending = new Map<string, PendingUpload>();

  constructor(
    private readonly files: FileStore,
    private readonly baseUrl: () => string,
    private readonly stats: EmulatorStats,
  ) {}

  /** POST /storage/upload/initiate (authorized by the caller). */
  async initiate(req: IncomingMessage, res: ServerResponse): Promise<void> {
    this.stats.storageInitiates++;
    const raw = await readBody(req, 64 * 1024);
    let body: { content_type?: unknown; file_name?: unknown } = {};
    try {
      body = JSON.parse(raw?.toString('utf8') || '{}') as typeof body;
    } catch {
      return sendJson(res, 422, { detail: [{ loc: ['body'], msg: 'JSON decode error', type: 'json_invalid' }] });
    }
    const contentType = typeof body.content_type === 'string' && body.content_type ? body.content_type : 'application/octet-stream';
    const requested = typeof body.file_name === 'string' ? body.file_name : '';
    const fileName = requested.replace(/[^A-Za-z0-9._-]+/g, '_').slice(-100) || 'file.bin';
    const token = newToken();
    this.pending.set(token, { fileName, contentType });
    sendJson(res, 200, { upload_url: `${this.baseUrl()}/storage/upload/${token}`, file_url: this.files.urlOf(token, fileName) });
  }

  /** PUT /storage/upload/{token}: the bytes of an initiated upload. */
  async put(req: IncomingMessage, res: ServerResponse, token: string): Promise<void> {
    const upload = this.pending.get(token);
    if (!upload) {
      req.resume();
      return sendJson(res, 404, { detail: 'Upload not found or already completed' });
    }
    const data = await readBody(req, MAX_UPLOAD);
    if (data === undefined) return sendJson(res, 413, { detail: 'File too large for a single upload' });
    this.pending.delete(token);
    this.files.putAt(token, upload.fileName, data, req.headers['content-type'] || upload.contentType);
    this.stats.storageUploads++;
    sendJson(res, 200, {});
  }
}
