// Generates the sample faces in examples/faces (synthetic cartoon drawings — no real people) and the
// sample manifest examples/faces.csv. Deterministic: rerunning gives the same files.
// Run: npx tsx scripts/make-faces.ts
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';

const dir = fileURLToPath(new URL('../examples/', import.meta.url));
const people = ['alice', 'bob', 'chen', 'dara', 'emeka', 'farah', 'gus', 'hana', 'ines', 'jonas', 'kofi', 'lena'];
const skins = ['#f2d0b1', '#e0ac69', '#c68642', '#8d5524', '#f1c27d', '#ffdbac'];
const hairs = ['#2c1b10', '#6b4423', '#d4a017', '#111111', '#a52a2a', '#8c8c8c'];
const eyes = ['#3b6ea5', '#4e8b3a', '#5a3b1c', '#222222'];

/** One cartoon face, 256×256: skin, hair, eyes, mouth and accessories vary with `i`. */
function faceSvg(i: number): string {
  const skin = skins[i % skins.length]!;
  const hair = hairs[(i * 5 + Math.floor(i / 6) * 3) % hairs.length]!;
  const eye = eyes[(i * 3) % eyes.length]!;
  const bg = `hsl(${(i * 37) % 360},45%,86%)`;
  const mouth = ['M98 170 Q128 196 158 170', 'M104 174 Q128 186 152 174', 'M106 176 L150 176'][i % 3]!;
  const hairShape =
    (i + Math.floor(i / 6)) % 2 === 0
      ? `<path d="M58 118 Q60 40 128 38 Q196 40 198 118 Q180 70 128 68 Q76 70 58 118Z" fill="${hair}"/>`
      : `<path d="M52 140 Q46 34 128 32 Q210 34 204 140 L190 100 Q128 60 66 100Z" fill="${hair}"/>`;
  const glasses =
    i % 4 === 2
      ? `<g fill="none" stroke="#333" stroke-width="4"><circle cx="100" cy="128" r="17"/><circle cx="156" cy="128" r="17"/><path d="M117 128 L139 128"/></g>`
      : '';
  const cheeks = i % 3 === 1 ? `<circle cx="86" cy="160" r="9" fill="#e8777755"/><circle cx="170" cy="160" r="9" fill="#e8777755"/>` : '';
  return `<svg xmlns="http://www.w3.org/2000/svg" width="256" height="256">
<rect width="256" height="256" fill="${bg}"/>
<ellipse cx="58" cy="140" rx="12" ry="18" fill="${skin}"/><ellipse cx="198" cy="140" rx="12" ry="18" fill="${skin}"/>
<ellipse cx="128" cy="138" rx="70" ry="86" fill="${skin}"/>
${hairShape}
<path d="M86 110 Q100 102 114 110 M142 110 Q156 102 170 110" stroke="${hair}" stroke-width="4" fill="none" stroke-linecap="round"/>
<ellipse cx="100" cy="128" rx="10" ry="8" fill="#fff"/><circle cx="100" cy="128" r="5" fill="${eye}"/>
<ellipse cx="156" cy="128" rx="10" ry="8" fill="#fff"/><circle cx="156" cy="128" r="5" fill="${eye}"/>
${glasses}${cheeks}
<path d="M128 136 L120 160 L134 160" stroke="#00000055" stroke-width="3" fill="none"/>
<path d="${mouth}" stroke="#7a2e2e" stroke-width="5" fill="none" stroke-linecap="round"/>
</svg>`;
}

/** RFC 4180 quoting where needed. */
function csvCell(value: string | number): string {
  const s = String(value);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

const prompts = [
  '',
  'full body portrait, standing in a park, natural light',
  '',
  'full body, business suit, studio backdrop',
  'full body, hiking gear, mountains behind',
];
const sizes = ['', 'portrait_4_3', '', 'portrait_16_9'];
const formats = ['png', 'jpeg', 'webp'];

async function main(): Promise<void> {
  await mkdir(join(dir, 'faces'), { recursive: true });
  const rows: (string | number)[][] = [['id', 'face_url', 'prompt', 'image_size', 'num_images', 'seed', 'output_format', 'team']];
  for (const [i, name] of people.entries()) {
    const file = `face-${String(i + 1).padStart(2, '0')}.png`;
    await sharp(Buffer.from(faceSvg(i))).png({ compressionLevel: 9, palette: true }).toFile(join(dir, 'faces', file));
    rows.push([
      name,
      `faces/${file}`,
      prompts[i % prompts.length]!,
      i === 3 ? '640x960' : sizes[i % sizes.length]!,
      i % 4 === 1 ? 2 : 1,
      i % 3 === 0 ? 1000 + i : '',
      formats[i % formats.length]!,
      i % 2 ? 'north' : 'south',
    ]);
  }
  // One row with a bad value, to show that a rejected row gets its reason and the rest go on.
  rows.push(['mo', 'faces/face-01.png', '', 'giant', 1, '', 'png', 'south']);
  await writeFile(join(dir, 'faces.csv'), rows.map((r) => r.map(csvCell).join(',')).join('\n') + '\n');
  console.log(`wrote ${people.length} faces to examples/faces and ${rows.length - 1} rows to examples/faces.csv`);
}

await main();
