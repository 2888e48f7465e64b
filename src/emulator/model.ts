// The model endpoint as the emulator plays it: input validation with the endpoint's public schema
// (pydantic-style 422 details), fetching the face, and real images of the requested size and format —
// the face composed onto a full-body drawing.
import sharp from 'sharp';

export const PRESET_SIZES: Record<string, { width: number; height: number }> = {
  square_hd: { width: 1024, height: 1024 },
  square: { width: 512, height: 512 },
  portrait_4_3: { width: 768, height: 1024 },
  portrait_16_9: { width: 576, height: 1024 },
  landscape_4_3: { width: 1024, height: 768 },
  landscape_16_9: { width: 1024, height: 576 },
};
const FORMATS = ['png', 'jpeg', 'webp'] as const;
type Format = (typeof FORMATS)[number];

export interface ModelInput {
  image_urls: string[];
  prompt: string;
  width: number;
  height: number;
  guidance_scale: number;
  num_inference_steps: number;
  seed?: number;
  sync_mode: boolean;
  output_format: Format;
  num_images: number;
}

export interface FieldError {
  loc: (string | number)[];
  msg: string;
  type: string;
}

/** Validates like the real endpoint: unknown fields are ignored, bad ones listed in `detail`. */
export function validateInput(body: unknown): { ok: true; input: ModelInput } | { ok: false; detail: FieldError[] } {
  const detail: FieldError[] = [];
  const err = (field: string, msg: string, type: string) => detail.push({ loc: ['body', field], msg, type });
  if (!body || typeof body !== 'object' || Array.isArray(body)) return { ok: false, detail: [{ loc: ['body'], msg: 'Input should be a valid dictionary', type: 'dict_type' }] };
  const b = body as Record<string, unknown>;
  const num = (field: string, def: number, min: number, max: number, int = false): number => {
    const v = b[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'number' || !Number.isFinite(v) || (int && !Number.isInteger(v))) {
      err(field, int ? 'Input should be a valid integer' : 'Input should be a valid number', int ? 'int_type' : 'float_type');
    } else if (v < min) err(field, `Input should be greater than or equal to ${min}`, 'greater_than_equal');
    else if (v > max) err(field, `Input should be less than or equal to ${max}`, 'less_than_equal');
    return typeof v === 'number' ? v : def;
  };
  const bool = (field: string, def: boolean): boolean => {
    const v = b[field];
    if (v === undefined || v === null) return def;
    if (typeof v !== 'boolean') err(field, 'Input should be a valid boolean', 'bool_type');
    return v === true;
  };
  const imageUrls = b.image_urls;
  if (imageUrls === undefined) err('image_urls', 'Field required', 'missing');
  else if (!Array.isArray(imageUrls) || imageUrls.length === 0 || !imageUrls.every((u) => typeof u === 'string')) {
    err('image_urls', 'Input should be a non-empty list of URLs', 'list_type');
  }
  if (b.prompt !== undefined && typeof b.prompt !== 'string') err('prompt', 'Input should be a valid string', 'string_type');
  let size = PRESET_SIZES.square_hd!;
  const s = b.image_size;
  if (typeof s === 'string') {
    if (PRESET_SIZES[s]) size = PRESET_SIZES[s]!;
    else err('image_size', `Input should be ${Object.keys(PRESET_SIZES).map((k) => `'${k}'`).join(', ')}`, 'enum');
  } else if (s && typeof s === 'object') {
    const { width, height } = s as { width?: unknown; height?: unknown };
    const ok = (v: unknown) => typeof v === 'number' && Number.isInteger(v) && v >= 64 && v <= 4096;
    if (!ok(width) || !ok(height)) err('image_size', 'width and height should be integers from 64 to 4096', 'value_error');
    else size = { width: width as number, height: height as number };
  } else if (s !== undefined && s !== null) err('image_size', 'Input should be an enum value or {width, height}', 'enum');
  const fmt = b.output_format ?? 'png';
  if (!FORMATS.includes(fmt as Format)) err('output_format', "Input should be 'png', 'jpeg' or 'webp'", 'enum');
  if (b.acceleration !== undefined && b.acceleration !== 'none' && b.acceleration !== 'regular') err('acceleration', "Input should be 'none' or 'regular'", 'enum');
  const input: ModelInput = {
    image_urls: Array.isArray(imageUrls) ? (imageUrls as string[]) : [],
    prompt: typeof b.prompt === 'string' ? b.prompt : 'Face to full portrait',
    width: size.width,
    height: size.height,
    guidance_scale: num('guidance_scale', 2.5, 0, 20),
    num_inference_steps: num('num_inference_steps', 40, 1, 100, true),
    seed: b.seed === undefined || b.seed === null ? undefined : num('seed', 0, 0, 4294967295, true),
    sync_mode: bool('sync_mode', false),
    output_format: fmt as Format,
    num_images: num('num_images', 1, 1, 4, true),
  };
  num('lora_scale', 1, 0, 4);
  bool('enable_safety_checker', true);
  return detail.length ? { ok: false, detail } : { ok: true, input };
}

/** Fetches the face like the model would: http(s) or a data: URI; anything else fails the request. */
export async function fetchFace(url: string, timeoutMs = 15_000): Promise<Buffer> {
  if (url.startsWith('data:')) {
    const comma = url.indexOf(',');
    if (comma < 0 || !/;base64$/i.test(url.slice(0, comma))) throw new Error('unsupported data URI');
    return Buffer.from(url.slice(comma + 1), 'base64');
  }
  if (!/^https?:\/\//i.test(url)) throw new Error(`unsupported URL scheme in ${url.slice(0, 60)}`);
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`GET ${url.split('?')[0]} answered ${res.status}`);
  return Buffer.from(await res.arrayBuffer());
}

export interface RenderedImage {
  data: Buffer;
  contentType: string;
  ext: Format;
  width: number;
  height: number;
}

/** One full-body portrait: a drawn figure whose colours come from the seed, the face at the head. */
export async function renderPortrait(face: Buffer, input: ModelInput, seed: number, sizeScale: number): Promise<RenderedImage> {
  const width = Math.max(16, Math.round(input.width * sizeScale));
  const height = Math.max(16, Math.round(input.height * sizeScale));
  const hue = seed % 360;
  const headSize = Math.max(8, Math.round(Math.min(width, height) * 0.2));
  const cx = Math.round(width / 2);
  const headTop = Math.round(height * 0.06);
  const shoulders = headTop + headSize;
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}">
<defs><linearGradient id="g" x1="0" y1="0" x2="0" y2="1"><stop offset="0" stop-color="hsl(${hue},35%,88%)"/><stop offset="1" stop-color="hsl(${(hue + 40) % 360},30%,70%)"/></linearGradient></defs>
<rect width="${width}" height="${height}" fill="url(#g)"/>
<rect x="${cx - headSize * 0.9}" y="${shoulders}" width="${headSize * 1.8}" height="${height * 0.42}" rx="${headSize * 0.4}" fill="hsl(${(hue + 180) % 360},45%,45%)"/>
<rect x="${cx - headSize * 0.8}" y="${shoulders + height * 0.4}" width="${headSize * 0.7}" height="${height * 0.45}" fill="hsl(${(hue + 220) % 360},30%,30%)"/>
<rect x="${cx + headSize * 0.1}" y="${shoulders + height * 0.4}" width="${headSize * 0.7}" height="${height * 0.45}" fill="hsl(${(hue + 220) % 360},30%,30%)"/>
<rect x="${cx - headSize * 1.4}" y="${shoulders + 4}" width="${headSize * 0.45}" height="${height * 0.36}" rx="${headSize * 0.2}" fill="hsl(${(hue + 180) % 360},45%,40%)"/>
<rect x="${cx + headSize * 0.95}" y="${shoulders + 4}" width="${headSize * 0.45}" height="${height * 0.36}" rx="${headSize * 0.2}" fill="hsl(${(hue + 180) % 360},45%,40%)"/>
</svg>`;
  const mask = Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="${headSize}" height="${headSize}"><circle cx="${headSize / 2}" cy="${headSize / 2}" r="${headSize / 2}"/></svg>`);
  const head = await sharp(face).resize(headSize, headSize, { fit: 'cover' }).composite([{ input: mask, blend: 'dest-in' }]).png().toBuffer();
  const canvas = sharp(Buffer.from(svg)).composite([{ input: head, left: Math.round(cx - headSize / 2), top: headTop }]);
  const fmt = input.output_format;
  const data = await (fmt === 'jpeg' ? canvas.jpeg({ quality: 85 }) : fmt === 'webp' ? canvas.webp({ quality: 85 }) : canvas.png()).toBuffer();
  return { data, contentType: `image/${fmt}`, ext: fmt, width, height };
}
