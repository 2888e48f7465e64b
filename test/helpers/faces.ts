import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';

/** A small synthetic face drawing (PNG) in a colour picked by `n`. */
export async function facePng(n: number): Promise<Buffer> {
  const hue = (n * 47) % 360;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96">
<rect width="96" height="96" fill="hsl(${hue},40%,85%)"/><circle cx="48" cy="50" r="34" fill="hsl(${(hue + 30) % 360},45%,70%)"/>
<circle cx="36" cy="44" r="4" fill="#222"/><circle cx="60" cy="44" r="4" fill="#222"/><path d="M34 64 Q48 74 62 64" stroke="#222" stroke-width="3" fill="none"/></svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

export async function writeFaces(dir: string, count: number): Promise<string[]> {
  await mkdir(dir, { recursive: true });
  const names: string[] = [];
  for (let i = 0; i < count; i++) {
    const name = `face-${i}.png`;
    await sharp(await facePng(i)).toFile(join(dir, name));
    names.push(name);
  }
  return names;
}

export async function faceDataUri(n: number): Promise<string> {
  return `data:image/png;base64,${(await facePng(n)).toString('base64')}`;
}
