// Streaming CSV manifest reader: one pass, constant memory (but for the set of ids seen), every row
// either valid (with its fal input) or rejected with the column and reason. Problems with the file as
// a whole (no header, no face_url column, no rows, not CSV) throw ManifestError.
//
// The result depends only on the bytes read (and, for local faces, on which files exist): the run
// resumes by reading the manifest again and relies on getting the same lines, keys and verdicts.
import { statSync } from 'node:fs';
import { isAbsolute, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { CsvError, parse } from 'csv-parse';
import type { ZodType } from 'zod';
import {
  IMAGE_SIZE_PRESETS,
  MODEL_PARAM_COLUMNS,
  imageSizeSchema,
  modelParamsSchema,
  type ModelParam,
  type ModelParams,
} from '../core/modelInput.ts';
import { isReservedId, lineKey, toRowKey } from './rowKey.ts';

/** A problem with the manifest as a whole: nothing of it is submitted. The message is one line. */
export class ManifestError extends Error {
  override name = 'ManifestError';
}

export type FaceKind = 'http' | 'data' | 's3' | 'local';

interface RowBase {
  /** Line the record starts on (the header is line 1; a quoted field spanning lines pushes later rows down). */
  line: number;
  /** Row key: the id made S3-safe, or `line-N` for rows without an id (and rows whose id is refused). */
  key: string;
  /** The id cell, trimmed; absent when the row has none. */
  id?: string;
  /** The face cell, trimmed. */
  faceUrl: string;
}

export interface ValidRow extends RowBase {
  faceKind: FaceKind;
  /** Absolute path of a local face. */
  localPath?: string;
  /** Only the parameters the row gives; a field left out takes the model's default. */
  input: ModelParams;
  /** Columns that are not model parameters (header name as written, trimmed → cell). Never sent to fal. */
  extra: Record<string, string>;
}

export interface RejectedRow extends RowBase {
  /** The first bad column (`*` for the row as a whole) and why, naming the value. */
  rejected: { column: string; reason: string };
}

export type ManifestRow = ValidRow | RejectedRow;

export const isRejected = (row: ManifestRow): row is RejectedRow => 'rejected' in row;

export interface ReadManifestOptions {
  /** Directory relative local face paths are resolved against; without it they are rejected. */
  baseDir?: string;
}

/** Names of the face column, in order of preference when several are present. */
export const FACE_COLUMNS = ['face_url', 'image_url', 'url'] as const;
/** Extensions a local face may have (the producer uploads it with the matching content type). */
const LOCAL_IMAGE = /\.(png|jpe?g|webp)$/i;
const MAX_RECORD_BYTES = 16 * 1024 * 1024;

/**
 * Reads a manifest as it streams in, yielding one item per data row in file order. Throws
 * ManifestError for problems with the file as a whole, possibly after earlier rows were yielded (a
 * caller that must not act on a broken file reads it through once first).
 */
export async function* readManifest(source: NodeJS.ReadableStream | Readable, opts: ReadManifestOptions = {}): AsyncGenerator<ManifestRow> {
  // Line numbers are counted here, in the parser's own order: csv-parse's `lines` counts a CRLF inside
  // quotes twice, and the records it has buffered are dropped when it fails, so a count kept by the
  // consumer would be wrong in both cases. A record starts after every line break of the records before
  // it (its own breaks inside quotes, plus one delimiter each) and the empty lines skipped so far.
  let breaks = 0;
  const onRecord = (record: string[], info: { empty_lines: number }): Parsed | null => {
    const line = 1 + breaks + info.empty_lines;
    breaks += 1;
    let blank = true;
    for (const field of record) {
      if (field !== '' && blank && field.trim() !== '') blank = false;
      if (SPECIAL.test(field)) breaks += inspectField(field, line);
    }
    return blank ? null : { record, line };
  };
  const parser = parse({
    bom: true,
    relax_column_count: true,
    skip_empty_lines: true,
    ltrim: true,
    rtrim: true,
    record_delimiter: ['\r\n', '\n', '\r'],
    max_record_size: MAX_RECORD_BYTES,
    on_record: onRecord as unknown as (record: string[], context: unknown) => string[],
  });
  let sourceError: Error | undefined;
  source.on('error', (err: Error) => {
    sourceError = err;
    parser.destroy(err);
  });
  source.pipe(parser);

  let reader: RowReader | undefined;
  let rows = 0;
  let finished = false;
  try {
    for await (const parsed of parser as AsyncIterable<Parsed>) {
      if (!reader) {
        reader = new RowReader(parsed.record, opts);
        continue;
      }
      rows++;
      yield reader.read(parsed.record, parsed.line);
    }
    finished = true;
  } catch (err) {
    if (err instanceof ManifestError) throw err;
    if (sourceError) throw new ManifestError(`cannot read the manifest: ${firstLine(sourceError.message)}`);
    if (err instanceof CsvError) throw new ManifestError(`not a CSV file: ${describeCsvError(err, 1 + breaks + Number(err.empty_lines ?? 0))}`);
    throw err;
  } finally {
    if (!finished) {
      // Stopped early (error, or the consumer broke off): stop reading the source too.
      source.unpipe(parser);
      parser.destroy();
      (source as Partial<Readable>).destroy?.();
    }
  }
  if (!reader) throw new ManifestError('the manifest is empty: a header row with a face_url column is required');
  if (rows === 0) throw new ManifestError('the manifest has a header but no rows');
}

interface Parsed {
  record: string[];
  line: number;
}

// eslint-disable-next-line no-control-regex -- NUL is what gives a binary file away
const SPECIAL = /[\r\n\u0000\ufffd]/;
const BREAK = /\r\n|\r|\n/g;

/** A field holding a line break, a NUL or U+FFFD: returns its line breaks; throws for binary or non-UTF-8 text. */
function inspectField(field: string, line: number): number {
  if (field.includes('\u0000')) throw new ManifestError(`not a CSV file: line ${line} holds NUL bytes (binary data)`);
  if (field.includes('\ufffd')) {
    throw new ManifestError(`not a CSV file: line ${line} holds bytes that are not UTF-8 text (binary data, or another encoding: save the manifest as UTF-8)`);
  }
  return field.match(BREAK)?.length ?? 0;
}

function describeCsvError(err: CsvError, line: number): string {
  switch (err.code) {
    case 'CSV_QUOTE_NOT_CLOSED':
      return `the quoted field in the record starting on line ${line} is never closed (the file ends inside the quotes)`;
    case 'INVALID_OPENING_QUOTE':
      return `the record starting on line ${line} has a quote inside an unquoted field (quote the whole field and double the quotes in it)`;
    case 'CSV_INVALID_CLOSING_QUOTE':
    case 'CSV_NON_TRIMABLE_CHAR_AFTER_CLOSING_QUOTE':
      return `the record starting on line ${line} has characters after a closing quote (quote the whole field and double the quotes in it)`;
    case 'CSV_MAX_RECORD_SIZE':
      return `the record starting on line ${line} is larger than ${MAX_RECORD_BYTES / 2 ** 20} MiB`;
    default:
      return `near line ${line}: ${firstLine(err.message)}`;
  }
}

type ColumnPlan =
  | { kind: 'face' | 'id' | 'skip' }
  | { kind: 'param'; param: ModelParam }
  | { kind: 'extra'; name: string };

type Verdict = { faceKind: FaceKind; localPath?: string } | { reason: string };

/** Validates data rows against one header. Holds the keys of the ids seen so far. */
class RowReader {
  private readonly width: number;
  private readonly plan: ColumnPlan[];
  private readonly faceCol: number;
  private readonly faceName: string;
  private readonly idCol: number;
  /** Row key → line of the first row with that key. */
  private readonly seen = new Map<string, number>();

  constructor(
    record: string[],
    private readonly opts: ReadManifestOptions,
  ) {
    const names = record.map((h) => h.trim());
    const lower = names.map((h) => h.toLowerCase());
    const first = new Map<string, number>();
    lower.forEach((h, i) => {
      if (h === '') return;
      const j = first.get(h);
      if (j !== undefined) throw new ManifestError(`column ${show(names[i]!)} appears twice in the header (columns ${j + 1} and ${i + 1})`);
      first.set(h, i);
    });
    const face = FACE_COLUMNS.find((c) => first.has(c));
    if (!face) {
      const found = names.filter((h) => h !== '').map((h) => (/^[\w .()-]{1,80}$/.test(h) ? h : show(h)));
      throw new ManifestError(`no face_url column (or image_url, url); columns found: ${found.length ? found.join(', ') : '(none)'}`);
    }
    this.width = record.length;
    this.faceCol = first.get(face)!;
    this.faceName = face;
    this.idCol = first.get('id') ?? -1;
    const params = new Set<string>(MODEL_PARAM_COLUMNS);
    this.plan = lower.map((h, i): ColumnPlan => {
      if (i === this.faceCol) return { kind: 'face' };
      if (i === this.idCol) return { kind: 'id' };
      if (h === '') return { kind: 'skip' };
      if (params.has(h)) return { kind: 'param', param: h as ModelParam };
      return { kind: 'extra', name: names[i]! };
    });
  }

  read(record: string[], line: number): ManifestRow {
    const faceUrl = (record[this.faceCol] ?? '').trim();
    const id = this.idCol >= 0 ? (record[this.idCol] ?? '').trim() : '';
    let key = lineKey(line);
    if (id) {
      // A refused id keeps the row's line key: the keys of all rows of a manifest stay distinct.
      const idKey = toRowKey(id);
      if (isReservedId(idKey)) {
        return rejectRow(line, key, id, faceUrl, 'id', `${show(id)} is reserved: ids of the form line-<digits> name rows without an id; choose another id`);
      }
      const earlier = this.seen.get(idKey);
      if (earlier !== undefined) {
        const same = idKey === id ? '' : ` (both give the row key ${show(idKey)})`;
        return rejectRow(line, key, id, faceUrl, 'id', `${show(id)} repeats the id of line ${earlier}${same}`);
      }
      this.seen.set(idKey, line);
      key = idKey;
    }
    if (record.length !== this.width) {
      return rejectRow(line, key, id, faceUrl, '*', `expected ${this.width} fields like the header, found ${record.length}`);
    }

    const face = this.classifyFace(faceUrl);
    if ('reason' in face) return rejectRow(line, key, id, faceUrl, this.faceName, face.reason);

    const input: Record<string, unknown> = {};
    const extra: Record<string, string> = {};
    for (let i = 0; i < this.plan.length; i++) {
      const col = this.plan[i]!;
      const cell = record[i]!;
      if (col.kind === 'param') {
        const v = cell.trim();
        if (v === '') continue; // empty = the model's default
        const parsed = parseParam(col.param, v);
        if ('reason' in parsed) return rejectRow(line, key, id, faceUrl, col.param, parsed.reason);
        input[col.param] = parsed.value;
      } else if (col.kind === 'extra') {
        extra[col.name] = cell;
      }
    }
    // Built field by field (no spreads): this runs once per row of files with millions of rows.
    const row: ValidRow = { line, key, faceUrl, faceKind: face.faceKind, input: input as ModelParams, extra };
    if (id) row.id = id;
    if (face.localPath) row.localPath = face.localPath;
    return row;
  }

  private classifyFace(url: string): Verdict {
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
    const baseDir = this.opts.baseDir;
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
}

function rejectRow(line: number, key: string, id: string, faceUrl: string, column: string, reason: string): RejectedRow {
  const row: RejectedRow = { line, key, faceUrl, rejected: { column, reason } };
  if (id) row.id = id;
  return row;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;
const WIDTH_X_HEIGHT = /^(\d+)\s*[xX]\s*(\d+)$/;
const TRUE = new Set(['true', '1', 'yes']);
const FALSE = new Set(['false', '0', 'no']);
const PRESETS = new Set<string>(IMAGE_SIZE_PRESETS);
const sizeObjectSchema = imageSizeSchema.options[1];

type ParamResult = { value: unknown } | { reason: string };

/** One non-empty, trimmed parameter cell → its typed value, or why it is refused. */
function parseParam(param: ModelParam, v: string): ParamResult {
  let value: unknown;
  let schema: ZodType = modelParamsSchema.shape[param];
  switch (param) {
    case 'sync_mode':
    case 'enable_safety_checker': {
      const l = v.toLowerCase();
      if (!TRUE.has(l) && !FALSE.has(l)) return { reason: `${show(v)} is not true/false (also accepted: 1/0, yes/no)` };
      value = TRUE.has(l);
      break;
    }
    case 'guidance_scale':
    case 'num_inference_steps':
    case 'seed':
    case 'num_images':
    case 'lora_scale':
      if (!DECIMAL.test(v)) return { reason: `${show(v)} is not a number${v.includes(',') ? ' (use . as the decimal separator)' : ''}` };
      value = Number(v);
      break;
    case 'image_size': {
      const m = WIDTH_X_HEIGHT.exec(v);
      if (m) {
        value = { width: Number(m[1]), height: Number(m[2]) };
        schema = sizeObjectSchema;
      } else if (PRESETS.has(v.toLowerCase())) {
        value = v.toLowerCase();
      } else {
        return { reason: `${show(v)} is not one of ${IMAGE_SIZE_PRESETS.join(', ')} or WIDTHxHEIGHT (e.g. 768x1024)` };
      }
      break;
    }
    case 'output_format':
      value = v.toLowerCase() === 'jpg' ? 'jpeg' : v.toLowerCase();
      break;
    case 'acceleration':
      value = v.toLowerCase();
      break;
    case 'prompt':
      value = v.replace(/\r\n?/g, '\n');
      break;
  }
  const parsed = schema.safeParse(value);
  if (parsed.success) return { value: parsed.data };
  return { reason: `${show(v)} ${describeIssue(parsed.error.issues[0] as Issue | undefined)}` };
}

interface Issue {
  code: string;
  message: string;
  path: PropertyKey[];
  origin?: string;
  expected?: string;
  minimum?: unknown;
  maximum?: unknown;
  values?: unknown[];
}

function describeIssue(issue: Issue | undefined): string {
  if (!issue) return 'is not valid';
  const of = issue.path.length ? ` (${issue.path.map(String).join('.')})` : '';
  switch (issue.code) {
    case 'too_small':
      return `is below the minimum ${String(issue.minimum)}${of}`;
    case 'too_big':
      return issue.origin === 'string' ? `is longer than ${String(issue.maximum)} characters` : `is above the maximum ${String(issue.maximum)}${of}`;
    case 'invalid_value':
      return `is not one of ${(issue.values ?? []).map(String).join(', ')}`;
    case 'invalid_type':
      return issue.expected === 'int' ? `is not a whole number${of}` : `is not a valid ${issue.expected ?? 'value'}${of}`;
    default:
      return `is not valid: ${firstLine(issue.message)}${of}`;
  }
}

/** A value in a message: quoted, escaped (one line), long ones cut. */
function show(s: string): string {
  return JSON.stringify(s.length > 80 ? `${s.slice(0, 77)}...` : s);
}

const firstLine = (s: string) => s.split(/\r?\n/, 1)[0] ?? '';
