// An image's format and pixel size from its first bytes, without decoding it: what preflight reads of
// a face from a bounded prefix (a ranged GET). PNG keeps its size in IHDR (byte 16), WEBP in its first
// chunk (byte 26 or so), JPEG in the first SOF segment after whatever metadata segments come first.
import { sniffImageFormat, type ImageFormat } from './imageType.ts';

export interface ImageHeader {
  format: ImageFormat;
  width: number;
  height: number;
}

/** The header's verdict on a prefix: the size, `more` (the prefix ends before the size), or why it is no image. */
export type HeaderVerdict = ImageHeader | 'more' | { invalid: string };

export function readImageHeader(head: Buffer): HeaderVerdict {
  if (head.length < 12) return 'more';
  const format = sniffImageFormat(head);
  if (!format) return { invalid: 'not a PNG, JPEG or WEBP image' };
  if (format === 'png') return png(head);
  if (format === 'webp') return webp(head);
  return jpeg(head);
}

function sized(format: ImageFormat, width: number, height: number): HeaderVerdict {
  return width > 0 && height > 0 ? { format, width, height } : { invalid: `a ${format.toUpperCase()} header giving a size of ${width}×${height}` };
}

function png(b: Buffer): HeaderVerdict {
  if (b.length < 24) return 'more';
  if (b.toString('latin1', 12, 16) !== 'IHDR') return { invalid: 'a PNG without its IHDR header' };
  return sized('png', b.readUInt32BE(16), b.readUInt32BE(20));
}

function webp(b: Buffer): HeaderVerdict {
  if (b.length < 30) return 'more';
  const chunk = b.toString('latin1', 12, 16);
  if (chunk === 'VP8 ') return sized('webp', b.readUInt16LE(26) & 0x3fff, b.readUInt16LE(28) & 0x3fff);
  if (chunk === 'VP8L') {
    const bits = b.readUInt32LE(21);
    return sized('webp', (bits & 0x3fff) + 1, ((bits >>> 14) & 0x3fff) + 1);
  }
  if (chunk === 'VP8X') return sized('webp', b.readUIntLE(24, 3) + 1, b.readUIntLE(27, 3) + 1);
  return { invalid: `a WEBP whose first chunk is ${JSON.stringify(chunk)}` };
}

/** Start-of-frame markers (every coding process but DHT C4, JPG C8 and DAC CC) carry the frame's size. */
const SOF = new Set([0xc0, 0xc1, 0xc2, 0xc3, 0xc5, 0xc6, 0xc7, 0xc9, 0xca, 0xcb, 0xcd, 0xce, 0xcf]);

function jpeg(b: Buffer): HeaderVerdict {
  let i = 2;
  for (;;) {
    if (i >= b.length) return 'more';
    if (b[i] !== 0xff) return { invalid: 'a JPEG whose segments are broken' };
    // Markers may be padded with any number of 0xFF fill bytes.
    while (i < b.length && b[i] === 0xff) i++;
    if (i >= b.length) return 'more';
    const marker = b[i++]!;
    // Markers without a length: TEM and the restart markers.
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue;
    if (marker === 0xd9 || marker === 0xda) return { invalid: 'a JPEG without a frame header before its image data' };
    if (i + 2 > b.length) return 'more';
    const length = b.readUInt16BE(i);
    if (length < 2) return { invalid: 'a JPEG whose segments are broken' };
    if (SOF.has(marker)) {
      if (i + 7 > b.length) return 'more';
      return sized('jpeg', b.readUInt16BE(i + 5), b.readUInt16BE(i + 3));
    }
    i += length;
  }
}
