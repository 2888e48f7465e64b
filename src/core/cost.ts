// What a run is expected to cost: fal bills this endpoint per output megapixel. Each image's size comes
// from the row's image_size (a preset or WIDTHxHEIGHT) and is rounded up to whole megapixels of
// 1024×1024 pixels, as fal bills; a row without image_size gets the face's own size from the model,
// so it is estimated at its face's size once preflight has read it, and at 1 MP before.
import { effectiveNumImages, type ImageSizePreset } from './modelInput.ts';

export const PRESET_PIXELS: Record<ImageSizePreset, { width: number; height: number }> = {
  square_hd: { width: 1024, height: 1024 },
  square: { width: 512, height: 512 },
  portrait_4_3: { width: 768, height: 1024 },
  portrait_16_9: { width: 576, height: 1024 },
  landscape_4_3: { width: 1024, height: 768 },
  landscape_16_9: { width: 1024, height: 576 },
};

const MEGAPIXEL = 1024 * 1024;

/** Billed megapixels of one image of this size. */
export function megapixelsOf(size: { width: number; height: number }): number {
  return Math.max(1, Math.ceil((size.width * size.height) / MEGAPIXEL));
}

export interface RowEstimate {
  images: number;
  megapixels: number;
  /** False when neither the row's image_size nor its face's size was known (estimated at 1 MP an image). */
  sized: boolean;
}

/** `face`: the face's pixel size as preflight read it, the output's size when the row gives no image_size. */
export function estimateRow(input: Readonly<Record<string, unknown>>, face?: { width: number; height: number }): RowEstimate {
  const images = effectiveNumImages(input);
  const size = input.image_size;
  if (typeof size === 'string' && size in PRESET_PIXELS) {
    return { images, megapixels: images * megapixelsOf(PRESET_PIXELS[size as ImageSizePreset]), sized: true };
  }
  if (size && typeof size === 'object' && 'width' in size && 'height' in size) {
    return { images, megapixels: images * megapixelsOf(size as { width: number; height: number }), sized: true };
  }
  if (face) return { images, megapixels: images * megapixelsOf(face), sized: true };
  return { images, megapixels: images, sized: false };
}

/** Money in JSON: exact to a millionth (what the Lua transitions count in), without float noise; shown with 2 decimals. */
export const roundMoney = (v: number): number => Math.round(v * 1_000_000) / 1_000_000;
