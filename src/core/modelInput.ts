// The model's input, from the public schema of fal-ai/flux-2-lora-gallery/face-to-full-portrait.
// Everything but image_urls is optional: a field left out takes the model's default.
import { z } from 'zod';

export const IMAGE_SIZE_PRESETS = ['square_hd', 'square', 'portrait_4_3', 'portrait_16_9', 'landscape_4_3', 'landscape_16_9'] as const;
export const OUTPUT_FORMATS = ['png', 'jpeg', 'webp'] as const;
export const ACCELERATIONS = ['none', 'regular'] as const;
export const DEFAULT_PROMPT = 'Face to full portrait';
/** Largest prompt we send: a sanity limit of ours (the schema sets none); longer cells are rejected. */
export const MAX_PROMPT_CHARS = 10_000;

export type ImageSizePreset = (typeof IMAGE_SIZE_PRESETS)[number];
export type OutputFormat = (typeof OUTPUT_FORMATS)[number];
export type Acceleration = (typeof ACCELERATIONS)[number];

/** The defaults the model applies to fields that are left out (as documented by the schema). */
export const MODEL_DEFAULTS = {
  prompt: DEFAULT_PROMPT,
  guidance_scale: 2.5,
  num_inference_steps: 40,
  enable_safety_checker: true,
  output_format: 'png',
  num_images: 1,
  lora_scale: 1,
} as const satisfies Partial<ModelParams>;

export const imageSizeSchema = z.union([
  z.enum(IMAGE_SIZE_PRESETS),
  z.object({ width: z.int().min(64).max(4096), height: z.int().min(64).max(4096) }),
]);

/** Per-row parameters (everything but image_urls), each with the schema's range; all required here. */
export const modelParamsSchema = z.object({
  prompt: z.string().max(MAX_PROMPT_CHARS),
  image_size: imageSizeSchema,
  guidance_scale: z.number().min(0).max(20),
  num_inference_steps: z.int().min(1).max(100),
  acceleration: z.enum(ACCELERATIONS),
  seed: z.int().min(0).max(4294967295),
  sync_mode: z.boolean(),
  enable_safety_checker: z.boolean(),
  output_format: z.enum(OUTPUT_FORMATS),
  num_images: z.int().min(1).max(4),
  lora_scale: z.number().min(0).max(4),
});

/** The full request body sent to fal: image_urls (the face) plus any of the optional parameters. */
export const falInputSchema = modelParamsSchema.partial().extend({
  image_urls: z.array(z.string().min(1)).min(1),
});

export type FalInput = z.infer<typeof falInputSchema>;
/** The optional parameters only: what a manifest row contributes (a field absent = the model default). */
export type ModelParams = Omit<FalInput, 'image_urls'>;
export type ModelParam = keyof z.infer<typeof modelParamsSchema>;

/** Manifest column names that map one-to-one to model parameters (everything but image_urls). */
export const MODEL_PARAM_COLUMNS: readonly ModelParam[] = Object.freeze(Object.keys(modelParamsSchema.shape) as ModelParam[]);

type AnyInput = ModelParams | Readonly<Record<string, unknown>>;

/** How many images fal returns for this input (num_images, default 1). */
export function effectiveNumImages(input: AnyInput): number {
  const n = (input as Record<string, unknown>).num_images;
  return typeof n === 'number' && Number.isInteger(n) && n >= 1 && n <= 4 ? n : MODEL_DEFAULTS.num_images;
}

/** The image format fal returns for this input (output_format, default png); also the file extension. */
export function effectiveOutputFormat(input: AnyInput): OutputFormat {
  const f = (input as Record<string, unknown>).output_format;
  return typeof f === 'string' && (OUTPUT_FORMATS as readonly string[]).includes(f) ? (f as OutputFormat) : MODEL_DEFAULTS.output_format;
}
