// The endpoint's input schema as fal publishes it for fal-ai/flux-2-lora-gallery/face-to-full-portrait,
// checked the way its pydantic model does (lax coercions, every bad field listed, unknown fields
// ignored, FastAPI's 422 `detail` entries). Written from the published schema on purpose, never
// imported from the product's src/core/modelInput.ts: a wrong range there must be caught here.
//
// Where the published page gives no bound, the bound below is a fal-like choice and says so.

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

/** fal's ImageSize object: width/height default 512; bounds as in fal's shared ImageSize type (0 < n ≤ 14142). */
const SIDE = { default: 512, gt: 0, le: 14_142 };
/** Unknown on the model page; the ranges fal's FLUX endpoints publish. */
const GUIDANCE = { default: 2.5, ge: 0, le: 20 };
const STEPS = { default: 40, ge: 1, le: 100 };
const NUM_IMAGES = { default: 1, ge: 1, le: 4 };
const LORA_SCALE = { default: 1, ge: 0, le: 4 };
/** fal's seeds are unsigned 64-bit integers (its own examples go up to 17454220438242315174). */
const SEED_MAX = 2n ** 64n - 1n;

export interface ModelInput {
  image_urls: string[];
  prompt: string;
  /** The requested size; undefined when image_size was left out: the output takes the face's size. */
  size?: { width: number; height: number };
  guidance_scale: number;
  num_inference_steps: number;
  acceleration: (typeof ACCELERATIONS)[number];
  seed?: bigint;
  sync_mode: boolean;
  enable_safety_checker: boolean;
  output_format: OutputFormat;
  num_images: number;
  lora_scale: number;
}

/** One FastAPI/pydantic v2 error entry. */
export interface FieldError {
  loc: (string | number)[];
  msg: string;
  type: string;
  input?: unknown;
  ctx?: Record<string, unknown>;
  url?: string;
}

export type Validation = { ok: true; input: ModelInput } | { ok: false; detail: FieldError[] };

const INT_RE = /^\s*[+-]?\d+\s*$/;
const FLOAT_RE = /^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/;
const TRUE_WORDS = new Set(['true', '1', 'yes', 'on', 't', 'y']);
const FALSE_WORDS = new Set(['false', '0', 'no', 'off', 'f', 'n']);
const PYDANTIC_ERRORS = 'https://errors.pydantic.dev/2.10/v/';

type Loc = (string | number)[];

/**
 * Validates a request body like the real endpoint. `body` comes from parseJsonExactSeeds, so an
 * integer seed arrives as its exact decimal string (pydantic reads numeric strings as ints too).
 */
export function validateInput(body: unknown): Validation {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    return { ok: false, detail: [error(['body'], 'Input should be a valid dictionary or object to extract fields from', 'model_attributes_type', body)] };
  }
  const b = body as Record<string, unknown>;
  const detail: FieldError[] = [];
  const fail = (loc: Loc, msg: string, type: string, input: unknown, ctx?: Record<string, unknown>) => {
    detail.push(error(['body', ...loc], msg, type, input, ctx));
  };
  const present = (field: string) => b[field] !== undefined && b[field] !== null;

  const toBigInt = (loc: Loc, v: unknown): bigint | undefined => {
    if (typeof v === 'number' && Number.isFinite(v)) {
      if (Number.isInteger(v)) return BigInt(v);
      fail(loc, 'Input should be a valid integer, got a number with a fractional part', 'int_from_float', v);
    } else if (typeof v === 'string') {
      if (INT_RE.test(v)) return BigInt(v.trim());
      fail(loc, 'Input should be a valid integer, unable to parse string as an integer', 'int_parsing', v);
    } else fail(loc, 'Input should be a valid integer', 'int_type', v);
    return undefined;
  };
  const toFloat = (loc: Loc, v: unknown): number | undefined => {
    if (typeof v === 'number' && Number.isFinite(v)) return v;
    if (typeof v === 'string') {
      if (FLOAT_RE.test(v)) return Number(v);
      fail(loc, 'Input should be a valid number, unable to parse string as a number', 'float_parsing', v);
    } else fail(loc, 'Input should be a valid number', 'float_type', v);
    return undefined;
  };
  const bounded = <T extends number | bigint>(loc: Loc, v: T | undefined, b: { ge?: T; gt?: T; le?: T }): T | undefined => {
    if (v === undefined) return undefined;
    const shown = (n: T) => (typeof n === 'bigint' ? String(n) : n);
    if (b.gt !== undefined && v <= b.gt) return void fail(loc, `Input should be greater than ${b.gt}`, 'greater_than', shown(v), { gt: shown(b.gt) });
    if (b.ge !== undefined && v < b.ge) return void fail(loc, `Input should be greater than or equal to ${b.ge}`, 'greater_than_equal', shown(v), { ge: shown(b.ge) });
    if (b.le !== undefined && v > b.le) return void fail(loc, `Input should be less than or equal to ${b.le}`, 'less_than_equal', shown(v), { le: shown(b.le) });
    return v;
  };
  const int = (field: string, spec: { default: number; ge?: number; gt?: number; le?: number }, loc: Loc = [field], raw = b[field]): number => {
    if (raw === undefined || raw === null) return spec.default;
    const v = toBigInt(loc, raw);
    return bounded(loc, v === undefined ? undefined : Number(v), spec) ?? spec.default;
  };
  const float = (field: string, spec: { default: number; ge?: number; le?: number }): number =>
    present(field) ? (bounded([field], toFloat([field], b[field]), spec) ?? spec.default) : spec.default;
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

  // image_size: a preset name or {width, height}; left out, the output takes the face's size.
  let size: { width: number; height: number } | undefined;
  if (present('image_size')) {
    const s = b.image_size;
    if (typeof s === 'string') {
      if (Object.hasOwn(PRESET_SIZES, s)) size = PRESET_SIZES[s as PresetSize];
      else fail(['image_size'], `Input should be ${orList(Object.keys(PRESET_SIZES))}`, 'enum', s, { expected: orList(Object.keys(PRESET_SIZES)) });
    } else if (typeof s === 'object' && !Array.isArray(s)) {
      const o = s as Record<string, unknown>;
      const errorsBefore = detail.length;
      const width = int('width', SIDE, ['image_size', 'width'], o.width);
      const height = int('height', SIDE, ['image_size', 'height'], o.height);
      if (detail.length === errorsBefore) size = { width, height };
    } else {
      fail(['image_size'], `Input should be ${orList(Object.keys(PRESET_SIZES))} or a valid dictionary with width and height`, 'union_tag_invalid', s);
    }
  }

  const input: ModelInput = {
    image_urls: imageUrls,
    prompt,
    ...(size ? { size } : {}),
    guidance_scale: float('guidance_scale', GUIDANCE),
    num_inference_steps: int('num_inference_steps', STEPS),
    acceleration: literal('acceleration', ACCELERATIONS, 'regular'),
    seed: present('seed') ? bounded(['seed'], toBigInt(['seed'], b.seed), { ge: 0n, le: SEED_MAX }) : undefined,
    sync_mode: bool('sync_mode', false),
    enable_safety_checker: bool('enable_safety_checker', true),
    output_format: literal('output_format', OUTPUT_FORMATS, 'png'),
    num_images: int('num_images', NUM_IMAGES),
    lora_scale: float('lora_scale', LORA_SCALE),
  };
  return detail.length > 0 ? { ok: false, detail } : { ok: true, input };
}

function error(loc: Loc, msg: string, type: string, input: unknown, ctx?: Record<string, unknown>): FieldError {
  return { type, loc, msg, input, ...(ctx ? { ctx } : {}), url: `${PYDANTIC_ERRORS}${type}` };
}

function orList(values: readonly string[]): string {
  const quoted = values.map((v) => `'${v}'`);
  return quoted.length < 2 ? (quoted[0] ?? '') : `${quoted.slice(0, -1).join(', ')} or ${quoted[quoted.length - 1]}`;
}
