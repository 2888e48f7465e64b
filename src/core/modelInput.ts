// The model's input, from the public schema of fal-ai/flux-2-lora-gallery/face-to-full-portrait.
import { z } from 'zod';

export const IMAGE_SIZE_PRESETS = ['square_hd', 'square', 'portrait_4_3', 'portrait_16_9', 'landscape_4_3', 'landscape_16_9'] as const;
export const OUTPUT_FORMATS = ['png', 'jpeg', 'webp'] as const;
export const ACCELERATIONS = ['none', 'regular'] as const;
export const DEFAULT_PROMPT = 'Face to full portrait';

export const imageSizeSchema = z.union([
  z.enum(IMAGE_SIZE_PRESETS),
  z.object({ width: z.number().int().min(64).max(4096), height: z.number().int().min(64).max(4096) }),
]);

/** Per-row parameters (everything but image_urls), with the schema's ranges. */
export const modelParamsSchema = z.object({
  prompt: z.string().min(1).max(10_000),
  image_size: imageSizeSchema,
  guidance_scale: z.number().min(0).max(20),
  num_inference_steps: z.number().int().min(1).max(100),
  acceleration: z.enum(ACCELERATIONS),
  seed: z.number().int().min(0).max(4294967295),
  sync_mode: z.boolean(),
  enable_safety_checker: z.boolean(),
  output_format: z.enum(OUTPUT_FORMATS),
  num_images: z.number().int().min(1).max(4),
  lora_scale: z.number().min(0).max(4),
});

export type ModelParams = Partial<z.infer<typeof modelParamsSchema>>;
export type FalInput = ModelParams & { image_urls: string[] };
export type ModelParam = keyof z.infer<typeof modelParamsSchema>;

export const MODEL_PARAM_COLUMNS = Object.keys(modelParamsSchema.shape) as ModelParam[];

export function effectiveNumImages(input: ModelParams | Record<string, unknown>): number {
  const n = (input as ModelParams).num_images;
  return typeof n === 'number' ? n : 1;
}

export function effectiveOutputFormat(input: ModelParams | Record<string, unknown>): (typeof OUTPUT_FORMATS)[number] {
  const f = (input as ModelParams).output_format;
  return f ?? 'png';
}
