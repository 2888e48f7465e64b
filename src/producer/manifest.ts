// Streaming CSV manifest reader: one pass, constant memory (but for the set of ids seen), every row
// either valid (with its fal input) or rejected with the column and reason. Problems with the file as
// a whole (no header, no face_url column, no rows, not CSV) throw ManifestError.
import { statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { parse } from 'csv-parse';
import { IMAGE_SIZE_PRESETS, MODEL_PARAM_COLUMNS, modelParamsSchema, type ModelParam, type ModelParams } from '../core/modelInput.ts';
import { GENERATED_KEY, lineKey, toRowKey } from './rowKey.ts';

/** A problem with the manifest as a whole: nothing of it is submitted. */
export class ManifestError extends Error {
  override name = 'ManifestError';
}

export type FaceKind = 'http' | 'data' | 's3' | 'local';

interface RowBase {
  /** Line the record starts on (the header is line 1). */
  line: number;
  key: string;
  id?: string;
  faceUrl: string;
}

export interface ValidRow extends RowBase {
  faceKind: FaceKind;
  localPath?: string;
  input: ModelParams;
  extra: Record<string, string>;
}

export interface RejectedRow extends RowBase {
  rejected: { column: string; reason: string };
}

export type ManifestRow = ValidRow | RejectedRow;

export const isRejected = (row: ManifestRow): row is RejectedRow => 'rejected' in row;

const FACE_COLUMNS = ['face_url', 'image_url', 'url'];
const BOOLEAN_PARAMS = new Set<ModelParam>(['sync_mode', 'enable_safety_checker']);
const NUMBER_PARAMS = new Set<ModelParam>(['guidance_scale', 'num_inference_steps', 'seed', 'num_images', 'lora_scale']);
const TRUE = new Set(['true', '1', 'yes']);
const FALSE = new Set(['false', '0', 'no']);

class CellError extends Error {
  constructor(
    readonly column: string,
    message: string,
  ) {
    super(message);
  }
}

export interface ReadManifestOptions {
  /** Directory local face paths are relative to; without it local paths are rejected. */
  baseDir?: string;
}

export async function* readManifest(source: Readable | NodeJS.ReadableStream, opts: ReadManifestOptions): AsyncGenerator<ManifestRow> {
  const parser = parse({
    bom: true,
    info: true,
    relax_column_count: true,
    skip_empty_lines: true,
    record_delimiter: ['\r\n', '\n', '\r'],
    max_record_size: 16 * 1024 * 1024,
  });
  let sourceError: Error | undefined;
  source.on('error', (err: Error) => {
    sourceError = err;
    parser.destroy(err);
  });
  (source as Readable).pipe(parser);

  let header: string[] | undefined;
  let faceCol = -1;
  let idCol = -1;
  const seen = new Map<string, number>();
  let rows = 0;
  try {
    for await (const { record, info } of parser as AsyncIterable<{ record: string[]; info: { lines: number } }>) {
      if (!header) {
        header = readHeader(record);
        faceCol = header.findIndex((h) => FACE_COLUMNS.includes(h));
        if (faceCol < 0) throw new ManifestError(`no face_url column (or image_url/url); columns found: ${header.join(', ') || '(none)'}`);
        idCol = header.indexOf('id');
        continue;
      }
      if (record.length === 1 && record[0]!.trim() === '') continue;
      rows++;
      const line = info.lines - record.reduce((n, f) => n + (f.match(/\r\n|\r|\n/g)?.length ?? 0), 0);
      yield validateRow(record, line, header, faceCol, idCol, seen, opts);
    }
  } catch (err) {
    if (err instanceof ManifestError) throw err;
    if (sourceError) throw new ManifestError(`cannot read the manifest: ${sourceError.message}`);
    throw new ManifestError(`not a valid CSV file: ${describeCsvError(err)}`);
  }
  if (!header) throw new ManifestError('the manifest is empty: a header row with a face_url column is required');
  if (rows === 0) throw new ManifestError('the manifest has a header but no rows');
}

function readHeader(record: string[]): string[] {
  if (record.some((h) => h.includes('\u0000')) || record.join('').includes('\ufffd')) {
    throw new ManifestError('not a CSV file: the first line holds binary data');
  }
  const header = record.map((h) => h.trim().toLowerCase());
  const dup = header.find((h, i) => h !== '' && header.indexOf(h) !== i);
  if (dup) throw new ManifestError(`column "${dup}" appears twice in the header`);
  return header;
}

function describeCsvError(err: unknown): string {
  const e = err as { code?: string; message?: string; lines?: number };
  const msg = (e.message ?? String(err)).split('\n')[0]!;
  if (e.code === 'CSV_QUOTE_NOT_CLOSED') return `a quoted field opened near line ${e.lines ?? '?'} is never closed`;
  if (e.code === 'CSV_MAX_RECORD_SIZE') return `a record near line ${e.lines ?? '?'} is larger than 16 MiB`;
  return msg;
}

function validateRow(
  record: string[],
  line: number,
  header: string[],
  faceCol: number,
  idCol: number,
  seen: Map<string, number>,
  opts: ReadManifestOptions,
): ManifestRow {
  const faceUrl = (record[faceCol] ?? '').trim();
  const rawId = idCol >= 0 ? (record[idCol] ?? '').trim() : '';
  const id = rawId || undefined;
  const base = { line, key: id ? toRowKey(id) : lineKey(line), id, faceUrl };
  const reject = (column: string, reason: string): RejectedRow => ({ ...base, rejected: { column, reason } });

  if (record.length !== header.length) return reject('*', `expected ${header.length} fields like the header, found ${record.length}`);
  if (record.some((f) => f.includes('\u0000'))) return reject('*', 'the row holds binary data (NUL bytes)');
  if (id) {
    if (GENERATED_KEY.test(id)) return reject('id', `"${id}" is reserved for rows without an id; choose another id`);
    const earlier = seen.get(base.key);
    if (earlier !== undefined) {
      return reject('id', earlier === -1 ? `"${id}" repeats an earlier id` : `"${id}" repeats the id of line ${earlier}${toRowKey(id) !== id ? ` (as key ${base.key})` : ''}`);
    }
    seen.set(base.key, line);
  }

  try {
    const face = classifyFace(faceUrl, header[faceCol]!, opts);
    const input: Record<string, unknown> = {};
    const extra: Record<string, string> = {};
    header.forEach((col, i) => {
      if (i === faceCol || i === idCol) return;
      const cell = record[i] ?? '';
      if ((MODEL_PARAM_COLUMNS as string[]).includes(col)) {
        if (cell.trim() !== '') input[col] = parseParam(col as ModelParam, cell);
      } else if (col !== '') {
        extra[col] = cell;
      }
    });
    return { ...base, ...face, input: input as ModelParams, extra };
  } catch (err) {
    if (err instanceof CellError) return reject(err.column, err.message);
    throw err;
  }
}

function classifyFace(url: string, column: string, opts: ReadManifestOptions): { faceKind: FaceKind; localPath?: string } {
  if (!url) throw new CellError(column, 'is empty: every row needs a face');
  if (/^https?:\/\//i.test(url)) {
    try {
      new URL(url);
    } catch {
      throw new CellError(column, `"${clip(url)}" is not a valid URL`);
    }
    return { faceKind: 'http' };
  }
  if (/^data:/i.test(url)) {
    if (!/^data:image\/[a-z0-9.+-]+(;[a-z0-9=.+-]+)*;base64,[A-Za-z0-9+/=\s]+$/i.test(url)) {
      throw new CellError(column, 'is a data: URI but not a base64 image (data:image/...;base64,...)');
    }
    return { faceKind: 'data' };
  }
  if (/^s3:\/\//i.test(url)) {
    if (!/^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\/.+/.test(url)) throw new CellError(column, `"${clip(url)}" is not an s3://bucket/key URL`);
    return { faceKind: 's3' };
  }
  if (/^[a-z][a-z0-9+.-]*:/i.test(url) && !/^[a-z]:[\\/]/i.test(url)) {
    throw new CellError(column, `"${clip(url)}" has an unsupported scheme; use http(s)://, data:image/, s3:// or a local path`);
  }
  if (!opts.baseDir && !isAbsolute(url)) throw new CellError(column, `local path "${clip(url)}" cannot be resolved here`);
  const localPath = resolve(opts.baseDir ?? '/', url);
  let isFile = false;
  try {
    isFile = statSync(localPath).isFile();
  } catch {
    isFile = false;
  }
  if (!isFile) throw new CellError(column, `local file "${clip(url)}" does not exist (resolved to ${localPath})`);
  return { faceKind: 'local', localPath };
}

function parseParam(col: ModelParam, cell: string): unknown {
  const v = cell.trim();
  let value: unknown = v;
  if (BOOLEAN_PARAMS.has(col)) {
    const l = v.toLowerCase();
    if (!TRUE.has(l) && !FALSE.has(l)) throw new CellError(col, `"${clip(v)}" is not true/false (also accepted: 1/0, yes/no)`);
    value = TRUE.has(l);
  } else if (NUMBER_PARAMS.has(col)) {
    value = Number(v);
    if (!Number.isFinite(value)) throw new CellError(col, `"${clip(v)}" is not a number`);
  } else if (col === 'image_size') {
    const m = /^(\d+)\s*[xX]\s*(\d+)$/.exec(v);
    if (m) value = { width: Number(m[1]), height: Number(m[2]) };
    else if (!(IMAGE_SIZE_PRESETS as readonly string[]).includes(v)) {
      throw new CellError(col, `"${clip(v)}" is not one of ${IMAGE_SIZE_PRESETS.join(', ')} or WIDTHxHEIGHT`);
    }
  } else if (col === 'acceleration' || col === 'output_format') {
    value = v.toLowerCase();
  } else if (col === 'prompt') {
    value = cell;
  }
  const parsed = modelParamsSchema.shape[col].safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CellError(col, `"${clip(v)}" ${describeIssue(issue)}`);
  }
  return parsed.data;
}

function describeIssue(issue: { code: string; message: string; minimum?: unknown; maximum?: unknown; values?: unknown[]; path?: PropertyKey[] } | undefined): string {
  if (!issue) return 'is not valid';
  const where = issue.path?.length ? ` (${issue.path.join('.')})` : '';
  if (issue.code === 'too_small') return `is below the minimum ${String(issue.minimum)}${where}`;
  if (issue.code === 'too_big') return `is above the maximum ${String(issue.maximum)}${where}`;
  if (issue.code === 'invalid_value' && issue.values) return `is not one of ${issue.values.join(', ')}`;
  if (issue.code === 'invalid_type' && /int/i.test(issue.message)) return 'is not a whole number';
  return `is not valid: ${issue.message}${where}`;
}

const clip = (s: string) => (s.length > 80 ? `${s.slice(0, 77)}...` : s);
