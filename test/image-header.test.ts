// The header reader preflight sizes faces with: width × height of PNG, JPEG and WEBP from their first
// bytes (checked against what sharp writes), "more" for a prefix that ends too soon, and a refusal for
// anything else.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import sharp from 'sharp';
import { readImageHeader } from '../src/core/imageHeader.ts';

const blank = (width: number, height: number, channels: 3 | 4 = 3) => sharp({ create: { width, height, channels, background: { r: 120, g: 90, b: 60, alpha: 0.5 } } });

test('PNG, JPEG and WEBP (lossy, lossless, extended) give their size from their first bytes', async () => {
  const cases: [string, Buffer, number, number][] = [
    ['png', await blank(3000, 4000).png().toBuffer(), 3000, 4000],
    ['jpeg', await blank(97, 33).jpeg().toBuffer(), 97, 33],
    // A JPEG whose frame header comes after 40 KB of EXIF: the reader walks the segments.
    ['jpeg', await blank(640, 480).withMetadata({ exif: { IFD0: { ImageDescription: 'x'.repeat(40_000) } } }).jpeg().toBuffer(), 640, 480],
    ['webp', await blank(1500, 1000).webp().toBuffer(), 1500, 1000],
    ['webp', await blank(321, 123).webp({ lossless: true }).toBuffer(), 321, 123],
    ['webp', await blank(500, 300, 4).withMetadata({ exif: { IFD0: { Copyright: 'c' } } }).webp().toBuffer(), 500, 300],
  ];
  for (const [format, bytes, width, height] of cases) {
    assert.deepEqual(readImageHeader(bytes), { format, width, height }, `${format} ${width}×${height}`);
  }
  const withExif = cases[2]![1];
  assert.ok(withExif.length > 40_000);
  assert.equal(readImageHeader(withExif.subarray(0, 1000)), 'more', 'a prefix that ends inside the metadata asks for more');
});

test('a prefix too short asks for more; HTML, SVG and broken headers are refused', async () => {
  const png = await blank(8, 8).png().toBuffer();
  assert.equal(readImageHeader(png.subarray(0, 20)), 'more');
  assert.equal(readImageHeader(Buffer.alloc(0)), 'more');
  for (const text of ['<!doctype html><html><body>Sign in</body></html>', '<svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"/>', 'GIF89a\x01\x00\x01\x00\x80\x00\x00\x00']) {
    assert.deepEqual(readImageHeader(Buffer.from(text, 'latin1')), { invalid: 'not a PNG, JPEG or WEBP image' }, text);
  }
  const noIhdr = Buffer.from(png);
  noIhdr.write('XXXX', 12, 'latin1');
  assert.match((readImageHeader(noIhdr) as { invalid: string }).invalid, /IHDR/);
  const zero = Buffer.from(png);
  zero.writeUInt32BE(0, 16);
  assert.match((readImageHeader(zero) as { invalid: string }).invalid, /size of 0×8/);
  // A JPEG that reaches its image data without a frame header.
  const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x04, 0x00, 0x00, 0xff, 0xda, 0x00, 0x02, 0x00, 0x00]);
  assert.match((readImageHeader(jpeg) as { invalid: string }).invalid, /without a frame header/);
});
