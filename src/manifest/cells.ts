// Report cells: text from a manifest written into a CSV a person opens in a spreadsheet. A cell that a
// spreadsheet would read as a formula is prefixed with ' (and the prefix is removed when reading back).

const FORMULA_START = /^[=+\-@\t\r]/;

/** Spreadsheet formula injection: a cell starting with = + - @ (or tab/CR) is prefixed with '. */
export function escapeCell(v: string): string {
  return FORMULA_START.test(v) ? `'${v}` : v;
}

/** The text escapeCell was given. */
export function unescapeCell(v: string): string {
  return v.startsWith("'") && FORMULA_START.test(v.slice(1)) ? v.slice(1) : v;
}
