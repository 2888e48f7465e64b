// What a result image really is, from its first bytes: a server's Content-Type (or a data: URI's
// claimed type) is only a claim. Only PNG, JPEG and WEBP are stored; SVG never (it can carry script).

export type ImageFormat = 'png' | 'jpeg' | 'webp';

/** Bytes needed to recognise every accepted format. */
export const SNIFF_BYTES = 12;

const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const JPEG = Buffer.from([0xff, 0xd8, 0xff]);

export function sniffImageFormat(head: Buffer): ImageFormat | undefined {
  if (head.subarray(0, PNG.length).equals(PNG)) return 'png';
  if (head.subarray(0, JPEG.length).equals(JPEG)) return 'jpeg';
  if (head.length >= 12 && head.toString('latin1', 0, 4) === 'RIFF' && head.toString('latin1', 8, 12) === 'WEBP') return 'webp';
  return undefined;
}

export function contentTypeOf(format: ImageFormat): string {
  return `image/${format}`;
}

/** The one sentence a refused body gets: what it claimed, and what its first bytes look like. */
export function notAnImage(what: string, claimed: string, head: Buffer): string {
  const text = head.toString('latin1').replace(/[^\x20-\x7e]/g, '.');
  return `${what} is not a PNG, JPEG or WEBP image (it claimed ${claimed || 'no type'}; it starts with "${text}")`;
}
