// fal's seeds are unsigned 64-bit integers (e.g. 17454220438242315174); JSON.parse turns such a number
// into the nearest double (17454220438242314000), and JSON.stringify cannot write a BigInt. These two
// helpers keep seeds exact on both sides: reading quotes every integer `"seed"` value before parsing
// (so it arrives as its exact decimal string), writing emits BigInt values as their raw digits.
import { randomBytes } from 'node:crypto';

/** An integer literal and nothing more, matched where the scan stands (a window of the text could cut a long number). */
const INTEGER = /-?\d+(?![.eE\d])/y;

/**
 * The text with every integer value of a `"seed"` key turned into a JSON string of the same digits.
 * A small scanner, not a regex over the whole text: it skips string contents, so a prompt that
 * mentions `"seed": 1` is left alone.
 */
export function quoteSeeds(text: string): string {
  if (!text.includes('"seed"')) return text;
  let out = '';
  let last = 0;
  let i = 0;
  let lastString = '';
  let afterKeyColon = false;
  while (i < text.length) {
    const c = text[i]!;
    if (c === '"') {
      const start = i++;
      while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
      i++;
      lastString = text.slice(start, i);
      afterKeyColon = false;
      continue;
    }
    if (c === ':') {
      afterKeyColon = lastString === '"seed"';
      i++;
      continue;
    }
    if (afterKeyColon && (c === '-' || (c >= '0' && c <= '9'))) {
      INTEGER.lastIndex = i;
      const m = INTEGER.exec(text);
      if (m) {
        out += `${text.slice(last, i)}"${m[0]}"`;
        i += m[0].length;
        last = i;
      }
      afterKeyColon = false;
      continue;
    }
    // In JSON a ':' only ever follows its key (and white space), so the last string is all it needs.
    if (c !== ' ' && c !== '\t' && c !== '\n' && c !== '\r') afterKeyColon = false;
    i++;
  }
  return out + text.slice(last);
}

/** JSON.parse with every integer `"seed"` value kept exactly, as a decimal string. */
export function parseJsonExactSeeds(text: string): unknown {
  return JSON.parse(quoteSeeds(text));
}

/** JSON.stringify that writes BigInt values as plain JSON numbers with every digit. */
export function stringifyJson(value: unknown): string {
  let mark: string | undefined;
  const text = JSON.stringify(value, (_k, v: unknown) => {
    if (typeof v !== 'bigint') return v;
    // A fresh random mark per call, so no string of the value itself can look like one.
    mark ??= `bigint-${randomBytes(9).toString('hex')}:`;
    return `${mark}${v}`;
  });
  return mark === undefined ? text : text.replace(new RegExp(`"${mark}(-?\\d+)"`, 'g'), '$1');
}
