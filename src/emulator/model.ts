// The model endpoint as the emulator plays it (fal-ai/flux-2-lora-gallery/face-to-full-portrait):
// input validation with the endpoint's public schema and pydantic's lax coercions and error shapes
// (422 `detail` lists), fetching the face like the model would, and the output object.
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { renderPortrait, type RenderedImage } from './portrait.ts';

export const ENDPOINT_ID = 'fal-ai/flux-2-lora-gallery/face-to-full-portrait';
export const DEFAULT_PROMPT = 'Face to full portrait';

export const PRESET_SIZES = {
  square_hd: { width: 1024, height: 1024 },
  square: { width: 512, height: 512 },
  portrait_4_3: { width: 768, height: 1024 },
  portrait_16_9: { width: 576, height: 1024 },
  landscape_4_3: { width: 1024, height: 768 },
  landscape_16_9: { width: 1024, height: 576 },
} as const satisfies Record<string, { width: number; height: number }>;
export type PresetSize = keyof typeof PRESET_SIZES;

export const OUTPUT_FORMATS = ['png', 'jpeg', 'webp'] as const;
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];
const ACCELERATIONS = ['none', 'regular'] as const;

export interface ModelInput {
  image_urls: string[];
  prompt: string;
  /** Resolved size (a preset's or the given one). */
  width: number;
  height: number;
  guidance_scale: number;
  num_inference_steps: number;
  acceleration: (typeof ACCELERATIONS)[number];
  seed?: number;
  sync_mode: boolean;
  enable_safety_checker: boolean;
  output_format: OutputFormat;
  num_images: number;
  lora_scale: number;
}

/** One pydantic v2 error entry. */
export interface FieldError {
  loc: (string | number)[];
  msg: string;
  type: string;
  input?: unknown;
  ctx?: Record<string, unknown>;
}

export type Validation = { ok: true; input: ModelInput } | { ok: false; detail: FieldError[] };

/** A request that failed inside the model: what fal reports in status, result and webhook. */
export class ModelFailure extends Error {
  constructor(
    /** HTTP status of the result (422 input/image problems, 500 model errors). */
    readonly status: number,
    /** X-Fal-Error-Type / status `error_type`. */
    readonly type: string,
    message: string,
    /** The `detail` of the error body. */
    readonly detail: unknown,
  ) {
    super(message);
    this.name = 'ModelFailure';
  }
}

const INT_RE = /^\s*[+-]?\d+\s*$/;
const FLOAT_RE = /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;
const TRUE_WORDS = new Set(['true', '1', 'yes', 'on', 't', 'y']);
const FALSE_WORDS = new Set(['false', '0', 'no', 'off', 'f', 'n']);

/** Validates like the real endpoint: unknown fields are ignored, every bad field is listed. */
export function validateInput(body: unknown): Validation {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return { ok: false, detail: [{ loc: ['body'], msg: 'Input should be a valid dictionary or object to extract fields from', type: 'model_attributes_type', input: body }] };
  }
  const b = body as Record<string, unknown>;
  const detail: FieldError[] = [];
  const fail = (loc: (string | number)[], msg: string, type: string, input: unknown, ctx?: Record<string, unknown>) => {
    detail.push({ loc: ['body', ...loc], msg, type, input, ...(ctx ? { ctx } : {}) });
  };
  const present = (field: string) => b[field] !== undefined && b[field] !== null;

  const toInt = (loc: (string | number)[], v: unknown): number | undefined => {
    if (typeof v === 'number' && Number.isFinite(v)) {
      if (Number.isInteger(v)) return v;
      fail(loc, 'Input should be a valid integer, got a number with a fractional part', 'int_from_float', v);
    } else if (typeof v === 'string') {
      if (INT_RE.test(v)) return Number(v);
      fail(loc, 'Input should be a valid integer, unable to parse string as an integer', 'int_parsing', v);
    } else fail(loc, 'Input should be a valid integer', 'int_type', v);
    return undefined;
  };
  const toFloat = (loc: (string | number)[], v: unknown): number | undefined => {
    if (typeof v === 'number' && Number.isFinite(v)) return v;
    if (typeof v === 'string') {
      if (FLOAT_RE.test(v)) return Number(v);
      fail(loc, 'Input should be a valid number, unable to parse string as a number', 'float_parsing', v);
    } else fail(loc, 'Input should be a valid number', 'float_type', v);
    return undefined;
  };
  const inRange = (loc: (string | number)[], v: number | undefined, min: number | undefined, max: number | undefined): number | undefined => {
    if (v === undefined) return undefined;
    if (min !== undefined && v < min) {
      fail(loc, `Input should be greater than or equal to ${min}`, 'greater_than_equal', v, { ge: min });
      return undefined;
    }
    if (max !== undefined && v > max) {
      fail(loc, `Input should be less than or equal to ${max}`, 'less_than_equal', v, { le: max });
      return undefined;
    }
    return v;
  };
  const int = (field: string, def: number, min?: number, max?: number): number =>
    present(field) ? (inRange([field], toInt([field], b[field]), min, max) ?? def) : def;
  const float = (field: string, def: number, min?: number, max?: number): number =>
    present(field) ? (inRange([field], toFloat([field], b[field]), min, max) ?? def) : def;
  const bool = (field: string, def: boolean): boolean => {
    if (!present(field)) return def;
    const v = b[field];
    if (typeof v === 'boolean') return v;
    if (v === 0 || v === 1) return v === 1;
    if (typeof v === 'string' && TRUE_WORDS.has(v.toLowerCase())) return true;
    if (typeof v === 'string' && FALSE_WORDS.has(v.toLowerCase())) return false;
    fail([field], 'Input should be a valid boolean', typeof v === 'string' ? 'bool_parsing' : 'bool_type', v);
    return def;
  };
  const literal = <T extends string>(field: string, allowed: readonly T[], def: T): T => {
    if (!present(field)) return def;
    const v = b[field];
    if (typeof v === 'string' && (allowed as readonly string[]).includes(v)) return v as T;
    fail([field], `Input should be ${orList(allowed)}`, 'enum', v, { expected: orList(allowed) });
    return def;
  };

  // image_urls: required, a non-empty list of strings.
  let imageUrls: string[] = [];
  const rawUrls = b.image_urls;
  if (rawUrls === undefined) fail(['image_urls'], 'Field required', 'missing', body);
  else if (!Array.isArray(rawUrls)) fail(['image_urls'], 'Input should be a valid list', 'list_type', rawUrls);
  else if (rawUrls.length === 0) {
    fail(['image_urls'], 'List should have at least 1 item after validation, not 0', 'too_short', rawUrls, { field_type: 'List', min_length: 1, actual_length: 0 });
  } else {
    rawUrls.forEach((u, i) => {
      if (typeof u !== 'string') fail(['image_urls', i], 'Input should be a valid string', 'string_type', u);
    });
    imageUrls = rawUrls.filter((u): u is string => typeof u === 'string');
  }

  let prompt = DEFAULT_PROMPT;
  if (present('prompt')) {
    if (typeof b.prompt === 'string') prompt = b.prompt;
    else fail(['prompt'], 'Input should be a valid string', 'string_type', b.prompt);
  }

  // image_size: a preset name or {width, height}.
  let size: { width: number; height: number } = PRESET_SIZES.square_hd;
  if (present('image_size')) {
    const s = b.image_size;
    if (typeof s === 'string') {
      if (Object.hasOwn(PRESET_SIZES, s)) size = PRESET_SIZES[s as PresetSize];
      else fail(['image_size'], `Input should be ${orList(Object.keys(PRESET_SIZES))}`, 'enum', s, { expected: orList(Object.keys(PRESET_SIZES)) });
    } else if (typeof s === 'object' && !Array.isArray(s)) {
      const o = s as Record<string, unknown>;
      const side = (k: 'width' | 'height') =>
        o[k] === undefined || o[k] === null ? 512 : inRange(['image_size', k], toInt(['image_size', k], o[k]), 64, 4096);
      const width = side('width');
      const height = side('height');
      if (width !== undefined && height !== undefined) size = { width, height };
    } else {
      fail(['image_size'], `Input should be ${orList(Object.keys(PRESET_SIZES))} or a valid dictionary with width and height`, 'union_tag_invalid', s);
    }
  }

  const input: ModelInput = {
    image_urls: imageUrls,
    prompt,
    width: size.width,
    height: size.height,
    guidance_scale: float('guidance_scale', 2.5, 0, 20),
    num_inference_steps: int('num_inference_steps', 40, 1, 100),
    acceleration: literal('acceleration', ACCELERATIONS, 'regular'),
    seed: present('seed') ? inRange(['seed'], toInt(['seed'], b.seed), 0, Number.MAX_SAFE_INTEGER) : undefined,
    sync_mode: bool('sync_mode', false),
    enable_safety_checker: bool('enable_safety_checker', true),
    output_format: literal('output_format', OUTPUT_FORMATS, 'png'),
    num_images: int('num_images', 1, 1, 4),
    lora_scale: float('lora_scale', 1, 0, 4),
  };
  return detail.length > 0 ? { ok: false, detail } : { ok: true, input };
}

function orList(values: readonly string[]): string {
  const quoted = values.map((v) => `'${v}'`);
  return quoted.length < 2 ? (quoted[0] ?? '') : `${quoted.slice(0, -1).join(', ')} or ${quoted[quoted.length - 1]}`;
}

const MAX_FACE_BYTES = 20 * 1024 * 1024;

/** How a URL appears in messages: data URIs are cut, queries dropped (presigned URLs carry secrets). */
export function describeUrl(url: string): string {
  if (url.startsWith('data:')) return `${url.slice(0, Math.min(url.indexOf(',') + 1 || 40, 40))}…`;
  return url.split('?')[0]!.slice(0, 200);
}

function downloadError(url: string, reason: string): ModelFailure {
  const msg = `Failed to download the file from ${describeUrl(url)}: ${reason}. Please check if the URL is accessible.`;
  return new ModelFailure(422, 'file_download_error', msg, [{ loc: ['body', 'image_urls', 0], msg, type: 'file_download_error', input: describeUrl(url) }]);
}

function loadError(url: string, reason: string): ModelFailure {
  const msg = `Failed to load the image from ${describeUrl(url)}: ${reason}. Please ensure it is a valid image in a supported format.`;
  return new ModelFailure(422, 'image_load_error', msg, [{ loc: ['body', 'image_urls', 0], msg, type: 'image_load_error', input: describeUrl(url) }]);
}

/** Fetches the face like the model would (http(s) or a data: URI) and checks that it decodes. */
export async function loadFace(url: string, signal?: AbortSignal, timeoutMs = 15_000): Promise<Buffer> {
  let data: Buffer;
  if (url.startsWith('data:')) {
    const comma = url.indexOf(',');
    if (comma < 0) throw downloadError(url, 'malformed data URI');
    const meta = url.slice(5, comma);
    const payload = url.slice(comma + 1);
    data = /;base64$/i.test(meta) ? Buffer.from(payload, 'base64') : Buffer.from(decodeURIComponent(payload), 'utf8');
  } else if (/^https?:\/\//i.test(url)) {
    const signals = [AbortSignal.timeout(timeoutMs), ...(signal ? [signal] : [])];
    let res: Response;
    try {
      res = await fetch(url, { signal: AbortSignal.any(signals), redirect: 'follow' });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code;
      throw downloadError(url, cause ?? (err as Error).message);
    }
    if (!res.ok) {
      await res.body?.cancel().catch(() => undefined);
      throw downloadError(url, `the server answered ${res.status}`);
    }
    const declared = Number(res.headers.get('content-length') ?? 0);
    if (declared > MAX_FACE_BYTES) {
      await res.body?.cancel().catch(() => undefined);
      throw downloadError(url, `the file is larger than ${MAX_FACE_BYTES} bytes`);
    }
    try {
      data = Buffer.from(await res.arrayBuffer());
    } catch (err) {
      throw downloadError(url, (err as Error).message);
    }
  } else {
    throw downloadError(url, `unsupported URL scheme ${JSON.stringify(url.split(':')[0]?.slice(0, 20) ?? '')}`);
  }
  if (data.length === 0) throw loadError(url, 'the file is empty');
  if (data.length > MAX_FACE_BYTES) throw downloadError(url, `the file is larger than ${MAX_FACE_BYTES} bytes`);
  try {
    const meta = await sharp(data).metadata();
    if (!meta.width || !meta.height) throw new Error('no dimensions');
  } catch (err) {
    throw loadError(url, `cannot decode it (${(err as Error).message})`);
  }
  return data;
}

export interface OutputImage {
  url: string;
  content_type: string;
  file_name: string;
  file_size: number;
  width: number;
  height: number;
}

export interface ModelOutput {
  images: OutputImage[];
  seed: number;
  prompt: string;
  has_nsfw_concepts: boolean[];
  timings: { inference: number };
}

/**
 * Produces the endpoint's output: `num_images` real images of the requested size (scaled by
 * `sizeScale`) and format; `publish` turns each into the URL the output carries.
 */
export async function generate(
  input: ModelInput,
  face: Buffer,
  seed: number,
  sizeScale: number,
  publish: (image: RenderedImage) => string,
): Promise<ModelOutput> {
  const started = performance.now();
  const width = Math.max(8, Math.round(input.width * sizeScale));
  const height = Math.max(8, Math.round(input.height * sizeScale));
  const images: OutputImage[] = [];
  for (let i = 0; i < input.num_images; i++) {
    const img = await renderPortrait(face, { width, height, format: input.output_format }, seed, i);
    images.push({
      url: publish(img),
      content_type: img.contentType,
      file_name: img.fileName,
      file_size: img.data.length,
      width: img.width,
      height: img.height,
    });
  }
  return {
    images,
    seed,
    prompt: input.prompt,
    has_nsfw_concepts: images.map(() => false),
    timings: { inference: Math.round(performance.now() - started) / 1000 },
  };
}
