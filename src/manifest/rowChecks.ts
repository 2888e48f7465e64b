// Row checks: a header decides what each column is (face, id, model parameter, passthrough); each data
// row is then checked against it — its id and key, its width, its face, its parameter cells.
import { MODEL_PARAM_COLUMNS, type ModelParam, type ModelParams } from '../core/modelInput.ts';
import { ManifestError, show } from './errors.ts';
import { FACE_COLUMNS, FaceClassifier, type FaceOptions } from './faces.ts';
import { parseParam } from './params.ts';
import { rejectRow, type ManifestRow, type ValidRow } from './row.ts';
import { isReservedId, lineKey, toRowKey } from './rowKey.ts';

export interface RowCheckOptions extends FaceOptions {
  /**
   * Largest total of the cells a row carries through Redis while in flight, in UTF-8 bytes: the id,
   * the face (but a data: URI) and the passthrough columns (names and cells). Without it, unchecked.
   */
  maxRowBytes?: number;
}

type ColumnPlan =
  | { kind: 'face' | 'id' | 'skip' }
  | { kind: 'param'; param: ModelParam }
  | { kind: 'extra'; name: string };

/** Validates data rows against one header. Holds the keys of the ids seen so far. */
export class RowChecker {
  private readonly width: number;
  private readonly plan: ColumnPlan[];
  private readonly faceCol: number;
  private readonly faceName: string;
  private readonly idCol: number;
  private readonly faces: FaceClassifier;
  private readonly maxRowBytes: number;
  /** Row key → line of the first row with that key. */
  private readonly seen = new Map<string, number>();

  /** Plans the columns of a header record; throws ManifestError for a header no row can be read with. */
  constructor(
    record: string[],
    opts: RowCheckOptions,
  ) {
    this.faces = new FaceClassifier(opts);
    this.maxRowBytes = opts.maxRowBytes ?? Infinity;
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

  check(record: string[], line: number): ManifestRow {
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

    const face = this.faces.classify(faceUrl);
    if ('reason' in face) return rejectRow(line, key, id, faceUrl, this.faceName, face.reason);

    // The row travels through Redis with these cells: bound their bytes (model parameters are bounded
    // by the model's schema; a data: face is the image itself).
    let budget = this.maxRowBytes - Buffer.byteLength(id);
    if (budget < 0) return rejectRow(line, key, id, faceUrl, 'id', this.tooBig());
    if (face.faceKind !== 'data') budget -= Buffer.byteLength(faceUrl);
    if (budget < 0) return rejectRow(line, key, id, faceUrl, this.faceName, this.tooBig());

    const input: Record<string, unknown> = {};
    const extra: Record<string, string> = {};
    for (let i = 0; i < this.plan.length; i++) {
      const col = this.plan[i]!;
      const cell = record[i]!;
      if (col.kind === 'extra') {
        budget -= Buffer.byteLength(col.name) + Buffer.byteLength(cell);
        if (budget < 0) return rejectRow(line, key, id, faceUrl, col.name, this.tooBig());
        extra[col.name] = cell;
      } else if (col.kind === 'param') {
        const v = cell.trim();
        if (v === '') continue; // empty = the model's default
        const parsed = parseParam(col.param, v);
        if ('reason' in parsed) return rejectRow(line, key, id, faceUrl, col.param, parsed.reason);
        input[col.param] = parsed.value;
      }
    }
    // Built field by field (no spreads): this runs once per row of files with millions of rows.
    const row: ValidRow = { line, key, faceUrl, faceKind: face.faceKind, input: input as ModelParams, extra };
    if (id) row.id = id;
    if (face.localPath) row.localPath = face.localPath;
    return row;
  }

  private tooBig(): string {
    return `takes the row above MAX_ROW_BYTES (${this.maxRowBytes} bytes for the id, the face URL and the passthrough columns together): keep large data out of the manifest`;
  }
}
