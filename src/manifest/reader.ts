// Streaming CSV manifest reader: one pass, constant memory (but for the set of ids seen), every row
// either valid (with its fal input) or rejected with the column and reason. Problems with the file as
// a whole (no header, no face_url column, no rows, not CSV) throw ManifestError.
//
// The result depends only on the bytes read (and, for local faces, on which files exist): the run
// resumes by reading the manifest again and relies on getting the same lines, keys and verdicts.
import { pipeline, Transform, type Readable } from 'node:stream';
import { CsvError, Parser, type Options } from 'csv-parse';
import { ManifestError, firstLine } from './errors.ts';
import { s3FacePolicy, type FaceRule, type FaceRuleSettings } from './faceRule.ts';
import type { ManifestRow } from './row.ts';
import { RowChecker, type RowCheckOptions } from './rowChecks.ts';

export interface ReadManifestOptions extends RowCheckOptions {
  /**
   * The manifest's bounds: `bytes` of CSV text (decompressed, counted as it streams, blank lines and
   * comments included) and data `rows`. Past either the read throws ManifestError naming the variable,
   * so a small gzip of blank lines or of a million rejected rows costs a bounded read, never more.
   */
  limits?: ManifestLimits;
}

export interface ManifestLimits {
  bytes: number;
  rows: number;
}

interface ManifestLimitVars {
  MAX_MANIFEST_BYTES: number;
  MAX_MANIFEST_ROWS: number;
}

export function manifestLimits(cfg: ManifestLimitVars): ManifestLimits {
  return { bytes: cfg.MAX_MANIFEST_BYTES, rows: cfg.MAX_MANIFEST_ROWS };
}

/**
 * How a deployment reads a manifest it will submit: the run's face rule (stored with the run; without
 * one, the deployment's), its row and manifest bounds, and the manifest's folder.
 */
export function readOptionsFor(cfg: FaceRuleSettings & { MAX_ROW_BYTES: number } & ManifestLimitVars, baseDir: string | undefined, faces?: FaceRule): ReadManifestOptions {
  return { baseDir, s3: s3FacePolicy(cfg, faces), maxRowBytes: cfg.MAX_ROW_BYTES, limits: manifestLimits(cfg) };
}

const MAX_RECORD_BYTES = 16 * 1024 * 1024;

/**
 * Reads a manifest as it streams in, yielding one item per data row in file order. Throws
 * ManifestError for problems with the file as a whole, possibly after earlier rows were yielded (a
 * caller that must not act on a broken file reads it through once first).
 */
export async function* readManifest(source: NodeJS.ReadableStream | Readable, opts: ReadManifestOptions = {}): AsyncGenerator<ManifestRow> {
  const parser = new LineNumberingParser();
  let sourceError: Error | undefined;
  source.on('error', (err: Error) => {
    sourceError ??= err;
  });
  const limits = opts.limits;
  // pipeline, not .pipe: an error on either side destroys the other (a bare pipe forwards none).
  if (limits) pipeline(source, byteBound(limits.bytes), parser, () => undefined);
  else pipeline(source, parser, () => undefined);

  let checker: RowChecker | undefined;
  let rows = 0;
  let finished = false;
  try {
    for await (const parsed of parser as AsyncIterable<Parsed>) {
      if (!checker) {
        checker = new RowChecker(parsed.record, opts);
        continue;
      }
      rows++;
      if (limits && rows > limits.rows) throw new ManifestError(`the manifest has more than MAX_MANIFEST_ROWS (${limits.rows}) rows; split it into smaller manifests`);
      const row = checker.check(parsed.record, parsed.line);
      row.ordinal = rows;
      yield row;
    }
    finished = true;
  } catch (err) {
    if (err instanceof ManifestError) throw err;
    // Checked before the source's error: pipeline hands a parser error to the source too.
    if (err instanceof CsvError) throw new ManifestError(`not a CSV file: ${describeCsvError(err, parser.nextLine(Number(err.empty_lines ?? 0)))}`);
    if (sourceError) throw new ManifestError(`cannot read the manifest: ${firstLine(sourceError.message)}`);
    throw err;
  } finally {
    if (!finished) {
      // Stopped early (error, or the consumer broke off): stop reading the source too.
      parser.destroy();
      (source as Partial<Readable>).destroy?.();
    }
  }
  if (!checker) throw new ManifestError('the manifest is empty: a header row with a face_url column is required');
  if (rows === 0) throw new ManifestError('the manifest has a header but no rows');
}

/**
 * Passes the manifest's text on while counting its bytes; past `max` it fails the read with
 * ManifestError naming MAX_MANIFEST_BYTES (the source behind it is destroyed by the pipeline).
 */
function byteBound(max: number): Transform {
  let seen = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      seen += chunk.length;
      if (seen <= max) return done(null, chunk);
      done(new ManifestError(`the manifest is larger than MAX_MANIFEST_BYTES (${max} bytes of CSV text, after gunzip); split it into smaller manifests`));
    },
  });
}

interface Parsed {
  record: string[];
  line: number;
}

const CSV_OPTIONS: Options = {
  bom: true,
  relax_column_count: true,
  skip_empty_lines: true,
  ltrim: true,
  rtrim: true,
  record_delimiter: ['\r\n', '\n', '\r'],
  max_record_size: MAX_RECORD_BYTES,
};

/**
 * csv-parse's stream, yielding each record with the line it starts on, blank records left out.
 *
 * Line numbers are counted as the parser emits each record, in its own order: csv-parse's `lines`
 * counts a CRLF inside quotes twice, and the records it has buffered are dropped when it fails, so a
 * count kept by the consumer would be wrong in both cases. A record starts after every line break of
 * the records before it (its own breaks inside quotes, plus one delimiter each) and the empty lines
 * skipped so far. This is done in `push`, not csv-parse's `on_record` hook: that hook builds an info
 * object per record by spreading the parser's state twice, and those objects outlived the young
 * generation — a third more allocation and five times the promoted bytes, which made the heap of a
 * 10^6-row read grow to twice its live size (bench/notes/ingest.md).
 */
class LineNumberingParser extends Parser {
  private breaks = 0;
  private failed = false;

  constructor() {
    super(CSV_OPTIONS);
  }

  /** The line the record after the last one emitted starts on. */
  nextLine(emptyLines = this.info.empty_lines): number {
    return 1 + this.breaks + emptyLines;
  }

  override push(chunk: unknown, encoding?: BufferEncoding): boolean {
    if (chunk === null) return super.push(null, encoding);
    if (this.failed) return false;
    const record = chunk as string[];
    const line = this.nextLine();
    this.breaks += 1;
    let blank = true;
    try {
      for (const field of record) {
        if (field !== '' && blank && field.trim() !== '') blank = false;
        if (SPECIAL.test(field)) this.breaks += inspectField(field, line);
      }
    } catch (err) {
      // Called from inside csv-parse's own transform: the error ends the stream instead of escaping it.
      this.failed = true;
      this.destroy(err as Error);
      return false;
    }
    if (blank) return true;
    const parsed: Parsed = { record, line };
    return super.push(parsed);
  }
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
