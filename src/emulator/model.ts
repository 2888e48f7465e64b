// The model endpoint as the emulator plays it (fal-ai/flux-2-lora-gallery/face-to-full-portrait):
// fetching the face like the model would, generating, and the output object. Input validation is
// in schema.ts.
import { performance } from 'node:perf_hooks';
import sharp from 'sharp';
import { renderPortrait, type RenderedImage } from './portrait.ts';
import type { ModelInput } from './schema.ts';

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
    /** model: `detail` lists typed entries (fal's model errors); request: a string (fal's request errors). */
    readonly kind: 'model' | 'request' = 'model',
    /** X-Fal-Retryable on the result call: might the same request succeed again? (default: a 5xx) */
    readonly retryable: boolean = status >= 500,
  ) {
    super(message);
    this.name = 'ModelFailure';
  }
}

const MAX_FACE_BYTES = 20 * 1024 * 1024;

/** How a URL appears in messages: data URIs are cut, queries dropped (presigned URLs carry secrets). */
export function describeUrl(url: string): string {
  if (url.startsWith('data:')) return `${url.slice(0, Math.min(url.indexOf(',') + 1 || 40, 40))}…`;
  return url.split('?')[0]!.slice(0, 200);
}

/** A model error of fal's documented shape: `detail` entries with loc, msg, type and the docs url. */
function modelError(type: string, url: string, msg: string): ModelFailure {
  return new ModelFailure(422, type, msg, [{ loc: ['body', 'image_urls', 0], msg, type, url: `https://docs.fal.ai/errors#${type}`, input: describeUrl(url) }]);
}

function downloadError(url: string, reason: string): ModelFailure {
  return modelError('file_download_error', url, `Failed to download the file from ${describeUrl(url)}: ${reason}. Please check if the URL is accessible.`);
}

function loadError(url: string, reason: string): ModelFailure {
  return modelError('image_load_error', url, `Failed to load the image from ${describeUrl(url)}: ${reason}. Please ensure it is a valid image in a supported format.`);
}

export interface Face {
  data: Buffer;
  width: number;
  height: number;
}

export interface FaceSource {
  signal?: AbortSignal;
  timeoutMs?: number;
  /** The bytes of a URL the emulator serves itself (fal storage, its CDN), without a network call. */
  ownFile?: (url: string) => Buffer | undefined;
  /** Why fal could not reach this URL (privateNetwork: false), or undefined. */
  refuse?: (url: string) => Promise<string | undefined>;
}

const MAX_REDIRECTS = 5;

/** Fetches the face like the model would (http(s) or a data: URI) and checks that it decodes. */
export async function loadFace(url: string, src: FaceSource = {}): Promise<Face> {
  const { signal, timeoutMs = 15_000 } = src;
  let data: Buffer;
  const own = src.ownFile?.(url);
  if (own) data = own;
  else if (url.startsWith('data:')) {
    const comma = url.indexOf(',');
    if (comma < 0) throw downloadError(url, 'malformed data URI');
    const meta = url.slice(5, comma);
    const payload = url.slice(comma + 1);
    data = /;base64$/i.test(meta) ? Buffer.from(payload, 'base64') : Buffer.from(decodeURIComponent(payload), 'utf8');
  } else if (/^https?:\/\//i.test(url)) {
    const signals = [AbortSignal.timeout(timeoutMs), ...(signal ? [signal] : [])];
    let res: Response;
    let at = url;
    for (let hop = 0; ; hop++) {
      // Every hop is checked, so a public URL cannot redirect fal into a private network.
      const refused = await src.refuse?.(at);
      if (refused) throw downloadError(url, `fal cannot reach it (${refused})`);
      try {
        res = await fetch(at, { signal: AbortSignal.any(signals), redirect: src.refuse ? 'manual' : 'follow' });
      } catch (err) {
        const cause = (err as { cause?: { code?: string } }).cause?.code;
        throw downloadError(url, cause ?? (err as Error).message);
      }
      const location = res.status >= 300 && res.status < 400 ? res.headers.get('location') : null;
      if (!location) break;
      await res.body?.cancel().catch(() => undefined);
      if (hop >= MAX_REDIRECTS) throw downloadError(url, 'too many redirects');
      at = new URL(location, at).toString();
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
    return { data, width: meta.width, height: meta.height };
  } catch (err) {
    throw loadError(url, `cannot decode it (${(err as Error).message})`);
  }
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
  /** Unsigned 64-bit: written to JSON with every digit (stringifyJson). */
  seed: bigint;
  prompt: string;
  has_nsfw_concepts: boolean[];
  timings: { inference: number };
}

/**
 * Produces the endpoint's output: `num_images` real images in the requested format, of the requested
 * size scaled by `sizeScale`, or, without image_size, of the face's own size (unscaled: the face is
 * what a test controls); `publish` turns each into the URL the output carries.
 */
export async function generate(
  input: ModelInput,
  face: Face,
  seed: bigint,
  sizeScale: number,
  publish: (image: RenderedImage) => string,
): Promise<ModelOutput> {
  const started = performance.now();
  const scaled = (n: number) => Math.max(8, Math.round(n * sizeScale));
  const { width, height } = input.size ? { width: scaled(input.size.width), height: scaled(input.size.height) } : face;
  // The drawing takes a 32-bit seed: fold the 64 bits.
  const seed32 = Number(BigInt.asUintN(32, seed ^ (seed >> 32n)));
  const images: OutputImage[] = [];
  for (let i = 0; i < input.num_images; i++) {
    const img = await renderPortrait(face.data, { width, height, format: input.output_format }, seed32, i);
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
