// Manifests and faces for the benchmark runs.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';

/** A small face (64×64 PNG): with no image_size the emulator's output takes its size, so images stay small. */
export function facePng(): Promise<Buffer> {
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="#e8d8c8"/><circle cx="32" cy="34" r="22" fill="#c96"/></svg>`;
  return sharp(Buffer.from(svg)).png().toBuffer();
}

/** `id,face_url` with `rows` rows, every one the same face URL. */
export async function writeManifest(dir: string, name: string, rows: number, faceUrl: string): Promise<string> {
  const lines = ['id,face_url'];
  for (let i = 0; i < rows; i++) lines.push(`r${i},${faceUrl}`);
  const file = join(dir, `${name}.csv`);
  await writeFile(file, `${lines.join('\n')}\n`);
  return file;
}
