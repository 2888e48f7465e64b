// The emulator's "inference": a full-body cartoon figure drawn as SVG, colours from seed + image
// index, with the given face (its centre colour for the hands) placed as the head; encoded by sharp.
import { randomBytes } from 'node:crypto';
import sharp from 'sharp';
import { seededRandom } from './faults.ts';

export interface PortraitSpec {
  width: number;
  height: number;
  format: 'png' | 'jpeg' | 'webp';
}

export interface RenderedImage {
  data: Buffer;
  contentType: string;
  ext: PortraitSpec['format'];
  fileName: string;
  width: number;
  height: number;
}

const hsl = (h: number, s: number, l: number) => `hsl(${Math.round(h) % 360},${Math.round(s)}%,${Math.round(l)}%)`;
const r1 = (n: number) => Math.round(n * 10) / 10;

/** The average colour of the face's central area (the skin, for the drawn hands). */
async function skinTone(face: Buffer): Promise<string> {
  const img = sharp(face);
  const { width = 1, height = 1 } = await img.metadata();
  const w = Math.max(1, Math.round(width * 0.3));
  const h = Math.max(1, Math.round(height * 0.2));
  const { data } = await sharp(face)
    .removeAlpha()
    .extract({ left: Math.round((width - w) / 2), top: Math.round(height * 0.55 - h / 2), width: w, height: h })
    .resize(1, 1)
    .raw()
    .toBuffer({ resolveWithObject: true });
  return `rgb(${data[0] ?? 200},${data[1] ?? 160},${data[2] ?? 130})`;
}

function figureSvg(width: number, height: number, seed: number, index: number, skin: string): { svg: string; head: { size: number; left: number; top: number } } {
  const rnd = seededRandom((seed >>> 0) ^ Math.imul(index + 1, 0x27d4eb2d));
  const hue = rnd() * 360;
  const shirt = hsl(hue + 150 + rnd() * 60, 45 + rnd() * 30, 35 + rnd() * 25);
  const trousers = hsl(hue + 200 + rnd() * 80, 20 + rnd() * 30, 18 + rnd() * 20);
  const shoes = hsl(hue + rnd() * 40, 15, 10 + rnd() * 15);
  const top = height * 0.04;
  const fig = height * 0.92;
  const cx = width / 2;
  const hd = Math.max(4, Math.round(Math.min(fig * 0.17, width * 0.45)));
  const headTop = Math.round(top);
  const shoulderY = headTop + hd + fig * 0.025;
  const tw = Math.min(hd * 1.7, width * 0.8);
  const hipY = shoulderY + fig * 0.34;
  const bottom = top + fig;
  const shoeH = fig * 0.035;
  const aw = hd * 0.36;
  const armLen = fig * 0.31;
  const lw = tw * 0.4;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">
<defs><linearGradient id="bg" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="${hsl(hue, 40, 90)}"/><stop offset="1" stop-color="${hsl(hue + 30, 35, 72)}"/></linearGradient></defs>
<rect width="${width}" height="${height}" fill="url(#bg)"/>
<rect y="${r1(bottom - fig * 0.04)}" width="${width}" height="${r1(height - bottom + fig * 0.04)}" fill="${hsl(hue + 90, 25, 62)}"/>
<ellipse cx="${r1(cx)}" cy="${r1(bottom)}" rx="${r1(tw * 0.8)}" ry="${r1(shoeH)}" fill="#00000030"/>
<rect x="${r1(cx - hd * 0.15)}" y="${r1(headTop + hd * 0.8)}" width="${r1(hd * 0.3)}" height="${r1(shoulderY - headTop - hd * 0.7)}" fill="${skin}"/>
<g transform="rotate(8 ${r1(cx - tw / 2)} ${r1(shoulderY)})"><rect x="${r1(cx - tw / 2 - aw)}" y="${r1(shoulderY + hd * 0.05)}" width="${r1(aw)}" height="${r1(armLen)}" rx="${r1(aw / 2)}" fill="${shirt}"/><circle cx="${r1(cx - tw / 2 - aw / 2)}" cy="${r1(shoulderY + armLen + aw * 0.2)}" r="${r1(aw * 0.55)}" fill="${skin}"/></g>
<g transform="rotate(-8 ${r1(cx + tw / 2)} ${r1(shoulderY)})"><rect x="${r1(cx + tw / 2)}" y="${r1(shoulderY + hd * 0.05)}" width="${r1(aw)}" height="${r1(armLen)}" rx="${r1(aw / 2)}" fill="${shirt}"/><circle cx="${r1(cx + tw / 2 + aw / 2)}" cy="${r1(shoulderY + armLen + aw * 0.2)}" r="${r1(aw * 0.55)}" fill="${skin}"/></g>
<rect x="${r1(cx - tw * 0.46)}" y="${r1(hipY - fig * 0.03)}" width="${r1(lw)}" height="${r1(bottom - shoeH - hipY + fig * 0.03)}" rx="${r1(lw * 0.2)}" fill="${trousers}"/>
<rect x="${r1(cx + tw * 0.06)}" y="${r1(hipY - fig * 0.03)}" width="${r1(lw)}" height="${r1(bottom - shoeH - hipY + fig * 0.03)}" rx="${r1(lw * 0.2)}" fill="${trousers}"/>
<rect x="${r1(cx - tw / 2)}" y="${r1(shoulderY)}" width="${r1(tw)}" height="${r1(hipY - shoulderY)}" rx="${r1(hd * 0.3)}" fill="${shirt}"/>
<rect x="${r1(cx - tw / 2)}" y="${r1(hipY - fig * 0.035)}" width="${r1(tw)}" height="${r1(fig * 0.03)}" fill="${shoes}"/>
<ellipse cx="${r1(cx - tw * 0.26)}" cy="${r1(bottom - shoeH / 2)}" rx="${r1(lw * 0.7)}" ry="${r1(shoeH * 0.7)}" fill="${shoes}"/>
<ellipse cx="${r1(cx + tw * 0.26)}" cy="${r1(bottom - shoeH / 2)}" rx="${r1(lw * 0.7)}" ry="${r1(shoeH * 0.7)}" fill="${shoes}"/>
<circle cx="${r1(cx)}" cy="${r1(headTop + hd / 2)}" r="${r1(hd / 2 + Math.max(1, hd * 0.03))}" fill="${shoes}"/>
</svg>`;
  return { svg, head: { size: hd, left: Math.round(cx - hd / 2), top: headTop } };
}

/** One full-body portrait of `width`×`height` in `format`, the face as the head. */
export async function renderPortrait(face: Buffer, spec: PortraitSpec, seed: number, index: number): Promise<RenderedImage> {
  const { width, height, format } = spec;
  const skin = await skinTone(face);
  const { svg, head } = figureSvg(width, height, seed, index, skin);
  const mask = Buffer.from(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${head.size}" height="${head.size}"><circle cx="${head.size / 2}" cy="${head.size / 2}" r="${head.size / 2}"/></svg>`,
  );
  // The central part of the face picture (less background), cut round.
  const { width: fw = 1, height: fh = 1 } = await sharp(face).metadata();
  const crop = { left: Math.round(fw * 0.14), top: Math.round(fh * 0.08), width: Math.max(1, Math.round(fw * 0.72)), height: Math.max(1, Math.round(fh * 0.84)) };
  const headImg = await sharp(face)
    .extract(crop)
    .resize(head.size, head.size, { fit: 'cover' })
    .ensureAlpha()
    .composite([{ input: mask, blend: 'dest-in' }])
    .png()
    .toBuffer();
  const canvas = sharp(Buffer.from(svg)).composite([{ input: headImg, left: head.left, top: head.top }]);
  const encoded = format === 'jpeg' ? canvas.flatten().jpeg({ quality: 88 }) : format === 'webp' ? canvas.webp({ quality: 85 }) : canvas.png();
  const data = await encoded.toBuffer();
  return { data, contentType: `image/${format}`, ext: format, fileName: `${randomBytes(8).toString('hex')}.${format}`, width, height };
}
