// Copies a finished run out of S3 into a folder and writes index.html: each face beside its portraits.
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parse } from 'csv-parse/sync';
import type { Storage } from '../core/s3.ts';
import { unescapeCell } from '../manifest/index.ts';
import { ContainmentError, containedPath, pathRefusal } from './contained.ts';

/** What a copy of a run wrote: how many files, and the keys refused as paths (each with its reason). */
export interface CopyResult {
  files: number;
  refused: { key: string; reason: string }[];
}

/**
 * Copies every object under runPrefix into dir, each at its key less the prefix. A key that does not
 * name a file inside dir (`..`, `.`, empty or absolute segments, a backslash, a drive letter) is
 * refused with its name and the copy goes on with the others.
 */
export async function copyRunToDir(storage: Pick<Storage, 'list' | 'getStream'>, runPrefix: string, dir: string): Promise<CopyResult> {
  const result: CopyResult = { files: 0, refused: [] };
  for await (const o of storage.list(runPrefix)) {
    let dest: string;
    try {
      dest = containedPath(dir, o.key.slice(runPrefix.length), o.key);
    } catch (err) {
      if (!(err instanceof ContainmentError)) throw err;
      result.refused.push({ key: err.key, reason: err.message });
      continue;
    }
    await mkdir(dirname(dest), { recursive: true });
    await pipeline(await storage.getStream(o.key), createWriteStream(dest));
    result.files++;
  }
  return result;
}

const esc = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

interface ReportLine {
  line: string;
  id: string;
  row_key: string;
  face_url: string;
  status: string;
  images: string;
  error: string;
  seed: string;
}

/** Writes <dir>/index.html from <dir>/report.csv; image keys in the report are made relative to dir. */
export async function writeContactSheet(dir: string, runPrefix: string, title: string): Promise<string> {
  const rows = parse(await readFile(join(dir, 'report.csv')), { columns: true, bom: true }) as ReportLine[];
  // A key that could not be copied (contained.ts) gets no link either.
  const local = (key: string) => (key.startsWith(runPrefix) && !pathRefusal(key.slice(runPrefix.length)) ? key.slice(runPrefix.length) : '');
  const inputs = new Map<string, string>();
  try {
    for (const f of await readdir(join(dir, 'inputs'))) inputs.set(f.replace(/\.[^.]+$/, ''), `inputs/${f}`);
  } catch {
    /* no local faces in this run */
  }
  const cards = rows.map((r) => {
    const key = unescapeCell(r.row_key);
    const faceUrl = unescapeCell(r.face_url);
    const face = inputs.get(key) ?? (/^https?:|^data:image\//.test(faceUrl) ? faceUrl : '');
    const portraits = r.images
      ? unescapeCell(r.images)
          .split('|')
          .map(local)
          .filter(Boolean)
          .map((k) => `<a href="${esc(k)}"><img class="portrait" src="${esc(k)}" alt="portrait"></a>`)
          .join('')
      : `<p class="why">${esc(unescapeCell(r.error) || r.status)}</p>`;
    return `<section class="row ${esc(r.status)}">
  <header>line ${esc(r.line)}${r.id ? ` · ${esc(unescapeCell(r.id))}` : ''} · <b>${esc(r.status)}</b>${r.seed ? ` · seed ${esc(r.seed)}` : ''}</header>
  <div class="pair">${face ? `<img class="face" src="${esc(face)}" alt="face">` : '<div class="face none">no face</div>'}<span class="arrow">→</span>${portraits}</div>
</section>`;
  });
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body{font:14px system-ui,sans-serif;margin:24px;background:#f6f6f4;color:#222}
h1{font-size:20px} .row{background:#fff;border-radius:8px;padding:12px;margin:0 0 14px;box-shadow:0 1px 3px #0002}
.row header{margin-bottom:8px;color:#555} .pair{display:flex;align-items:center;gap:12px;flex-wrap:wrap}
.face{width:128px;height:128px;object-fit:cover;border-radius:6px;border:1px solid #ddd} .none{display:flex;align-items:center;justify-content:center;background:#eee}
.portrait{height:256px;border-radius:6px;border:1px solid #ddd} .arrow{font-size:28px;color:#999}
.failed header b,.rejected header b,.canceled header b{color:#b00020} .completed header b{color:#1b7f3a} .why{color:#b00020;max-width:600px}
</style></head>
<body><h1>${esc(title)}</h1><p>${rows.length} rows · <a href="report.csv">report.csv</a> · <a href="summary.json">summary.json</a></p>
${cards.join('\n')}
</body></html>
`;
  const file = join(dir, 'index.html');
  await writeFile(file, html);
  return file;
}
