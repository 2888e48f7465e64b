// What reading a manifest yields: one item per data row, either valid (with its fal input) or
// rejected with the column and reason.
import type { ModelParams } from '../core/modelInput.ts';
import type { FaceKind } from './faces.ts';

interface RowBase {
  /** Line the record starts on (the header is line 1; a quoted field spanning lines pushes later rows down). */
  line: number;
  /**
   * The row's position among the manifest's data rows (1 for the first; blank lines and the header
   * are not rows), set by readManifest. A row's done bit in Redis is indexed by it, not by its line:
   * a file of blank lines would otherwise make a bitmap as long as the file.
   */
  ordinal?: number;
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

export function rejectRow(line: number, key: string, id: string, faceUrl: string, column: string, reason: string): RejectedRow {
  const row: RejectedRow = { line, key, faceUrl, rejected: { column, reason } };
  if (id) row.id = id;
  return row;
}
