// Report cells: text from a manifest written into a CSV that people open in spreadsheets. A spreadsheet
// runs a cell that starts with = + - @ (or tab/CR) as a formula, and one whose locale splits on `;` or
// tab sees a new cell after each of those — so a trigger after a separator (`x;=1+2`) starts a formula
// too. Every place a cell can begin (the start, or after , ; tab CR LF) gets a ' before a trigger.
// A ' already standing there is escaped the same way, so unescapeCell gives back exactly the text.

/** Characters that make a spreadsheet cell a formula, plus ' (the escape itself). */
const ESCAPED = new Set(['=', '+', '-', '@', '\t', '\r', "'"]);
/** Characters after which some locale's spreadsheet starts a new cell. */
const SEPARATORS = new Set([',', ';', '\t', '\r', '\n']);

/** The cell as written to report.csv: no spreadsheet reads a formula in it, whatever its separator. */
export function escapeCell(v: string): string {
  let out = '';
  let cellStart = true;
  for (const ch of v) {
    if (cellStart && ESCAPED.has(ch)) out += "'";
    out += ch;
    cellStart = SEPARATORS.has(ch);
  }
  return out;
}

/** The text escapeCell was given. */
export function unescapeCell(v: string): string {
  let out = '';
  let cellStart = true;
  for (let i = 0; i < v.length; i++) {
    if (cellStart && v[i] === "'" && i + 1 < v.length && ESCAPED.has(v[i + 1]!)) i++;
    out += v[i];
    cellStart = SEPARATORS.has(v[i]!);
  }
  return out;
}
