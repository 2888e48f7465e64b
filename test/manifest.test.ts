// The manifest contract: encoding, quoting, line numbers, columns, per-row validation, row keys,
// file-level errors, streaming; plus the model input schema the rows are checked against.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { after, before, describe, test } from 'node:test';
import {
  DEFAULT_PROMPT,
  IMAGE_SIZE_PRESETS,
  MODEL_PARAM_COLUMNS,
  OUTPUT_FORMATS,
  effectiveNumImages,
  effectiveOutputFormat,
  falInputSchema,
} from '../src/core/modelInput.ts';
import {
  ManifestError,
  decodeDataFace,
  isRejected,
  faceRuleFor,
  faceRuleRefusal,
  s3FacePolicy,
  s3FaceRefusal,
  isReservedId,
  lineKey,
  readManifest,
  toRowKey,
  type ManifestRow,
  type ReadManifestOptions,
  type RejectedRow,
  type ValidRow,
} from '../src/manifest/index.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pb-manifest-'));
  await writeFile(join(dir, 'face.png'), 'png');
  await mkdir(join(dir, 'faces', 'sub.png'), { recursive: true }); // a directory with an image name
  await writeFile(join(dir, 'faces', 'b.JPG'), 'jpg');
  await writeFile(join(dir, 'notes.txt'), 'text');
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const F = 'https://a.example/f.png';

async function collect(source: Readable, opts: ReadManifestOptions = { baseDir: dir }): Promise<ManifestRow[]> {
  const rows: ManifestRow[] = [];
  for await (const r of readManifest(source, opts)) rows.push(r);
  return rows;
}
const read = (text: string | Buffer) => collect(Readable.from([typeof text === 'string' ? Buffer.from(text) : text]));
/** The same bytes in chunks of n bytes (splitting CRLFs and multi-byte characters). */
const readChunked = (text: string, n: number) => {
  const buf = Buffer.from(text);
  const chunks: Buffer[] = [];
  for (let i = 0; i < buf.length; i += n) chunks.push(buf.subarray(i, i + n));
  return collect(Readable.from(chunks));
};

const valid = (r: ManifestRow | undefined): ValidRow => {
  assert.ok(r && !isRejected(r), `expected a valid row, got ${JSON.stringify(r)}`);
  return r;
};
const rejected = (r: ManifestRow | undefined): RejectedRow['rejected'] => {
  assert.ok(r && isRejected(r), `expected a rejected row, got ${JSON.stringify(r)}`);
  return r.rejected;
};
async function manifestError(text: string | Buffer | Readable, msg: RegExp): Promise<void> {
  const run = text instanceof Readable ? collect(text) : read(text);
  await assert.rejects(run, (err: unknown) => {
    assert.ok(err instanceof ManifestError, `expected a ManifestError, got ${String(err)}`);
    assert.match(err.message, msg);
    assert.ok(!/[\r\n]/.test(err.message), `one line: ${JSON.stringify(err.message)}`);
    return true;
  });
}

describe('encoding and CSV syntax', () => {
  test('UTF-8 BOM, CRLF, header names trimmed and matched case-insensitively', async () => {
    const rows = await read('\ufeff ID , Face_URL ,\tSEED\r\nx,https://a.example/1.png,1\r\ny,https://a.example/2.png,2\r\n');
    assert.deepEqual(
      rows.map((r) => [r.line, r.key, r.id, r.faceUrl, valid(r).input.seed]),
      [
        [2, 'x', 'x', 'https://a.example/1.png', 1],
        [3, 'y', 'y', 'https://a.example/2.png', 2],
      ],
    );
  });

  test('LF, CRLF and CR files give the same rows; a last line without a newline counts', async () => {
    const lf = await read('face_url,prompt\nhttps://a.example/1.png,a\nhttps://a.example/2.png,b');
    assert.deepEqual(await read('face_url,prompt\r\nhttps://a.example/1.png,a\r\nhttps://a.example/2.png,b\r\n'), lf);
    assert.deepEqual(await read('face_url,prompt\rhttps://a.example/1.png,a\rhttps://a.example/2.png,b\r'), lf);
    assert.deepEqual(lf.map((r) => r.line), [2, 3]);
  });

  test('quoted commas, quotes and newlines; rows after a multi-line record start on later lines', async () => {
    const rows = await read(
      'face_url,prompt\n' +
        'https://a.example/1.png,"tall, smiling\nin a ""red"" coat"\n' + // lines 2-3
        'https://a.example/2.png,\n' + // line 4
        '\n' + // line 5: empty, skipped
        'https://a.example/3.png,"one\r\ntwo\r\nthree"\n' + // lines 6-8 (CRLF inside quotes is one break each)
        'https://a.example/4.png,x\n', // line 9
    );
    assert.equal(valid(rows[0]).input.prompt, 'tall, smiling\nin a "red" coat');
    assert.equal(valid(rows[2]).input.prompt, 'one\ntwo\nthree', 'CRLF inside a prompt becomes LF');
    assert.deepEqual(
      rows.map((r) => [r.line, r.key]),
      [
        [2, 'line-2'],
        [4, 'line-4'],
        [6, 'line-6'],
        [9, 'line-9'],
      ],
    );
  });

  test('CRLF file with a multi-line field: line numbers count each CRLF once', async () => {
    const rows = await read('face_url,prompt\r\nhttps://a.example/1.png,"a\r\nb"\r\nhttps://a.example/2.png,c\r\n\r\nhttps://a.example/3.png,d\r\n');
    assert.deepEqual(rows.map((r) => r.line), [2, 4, 6]);
  });

  test('empty, whitespace-only and all-empty lines are skipped, also before the header, but still counted', async () => {
    const rows = await read('\n\nface_url,seed\n   \n,\n\t\nhttps://a.example/1.png,1\n , \nhttps://a.example/2.png,2\n\n');
    assert.deepEqual(rows.map((r) => [r.line, valid(r).input.seed]), [[7, 1], [9, 2]]);
  });

  test('spaces around quoted fields are tolerated', async () => {
    const r = valid((await read('face_url, prompt ,team\n https://a.example/1.png , "a, b" ,  "x"  \n'))[0]);
    assert.equal(r.faceUrl, 'https://a.example/1.png');
    assert.equal(r.input.prompt, 'a, b');
    assert.deepEqual(r.extra, { team: 'x' });
  });

  test('chunk boundaries (split CRLF, split multi-byte characters) do not change the result', async () => {
    const text = '\ufeffid,face_url,prompt\r\né1,https://a.example/1.png,"naïve\r\nportrait — 顔"\r\nü2,https://a.example/2.png,😀 smiling\r\n';
    const whole = await read(text);
    for (const n of [1, 2, 3, 5, 7]) assert.deepEqual(await readChunked(text, n), whole, `chunks of ${n}`);
    assert.equal(valid(whole[0]).input.prompt, 'naïve\nportrait — 顔');
    assert.deepEqual(whole.map((r) => r.line), [2, 4]);
    assert.match(whole[0]!.key, /^_1_[0-9a-f]{10}$/);
    assert.match(whole[1]!.key, /^_2_[0-9a-f]{10}$/);
  });

  test('UTF-16LE with a BOM is read too', async () => {
    const text = Buffer.concat([Buffer.from([0xff, 0xfe]), Buffer.from(`face_url,prompt\r\n${F},ça va\r\n`, 'utf16le')]);
    const r = valid((await read(text))[0]);
    assert.equal(r.faceUrl, F);
    assert.equal(r.input.prompt, 'ça va');
  });
});

describe('columns', () => {
  test('aliases image_url and url name the face column (face_url is preferred, the others become metadata)', async () => {
    for (const col of ['image_url', 'url', 'IMAGE_URL', ' Url ']) {
      const r = valid((await read(`${col}\n${F}\n`))[0]);
      assert.equal(r.faceUrl, F, col);
    }
    const r = valid((await read(`url,face_url,image_url\nhttps://a.example/page,${F},https://a.example/other.png\n`))[0]);
    assert.equal(r.faceUrl, F);
    assert.deepEqual(r.extra, { url: 'https://a.example/page', image_url: 'https://a.example/other.png' });
    const bad = rejected((await read('url\nftp://x/y.png\n'))[0]);
    assert.equal(bad.column, 'url', 'the face column is named as in the file');
  });

  test('unknown columns are kept as metadata under their header name, never as model input', async () => {
    const r = valid((await read('face_url,team,Notes,,image_urls\nhttps://a.example/f.png,blue,"a, b",dropped,x\n'))[0]);
    assert.deepEqual(r.extra, { team: 'blue', Notes: 'a, b', image_urls: 'x' });
    assert.deepEqual(r.input, {});
    assert.equal(r.id, undefined);
    assert.ok(!('id' in r), 'no id property when there is no id column');
  });

  test('empty cells (and blank ones) leave the field out: the model default applies', async () => {
    const header = `face_url,${MODEL_PARAM_COLUMNS.join(',')}`;
    const r = valid((await read(`${header}\n${F}${','.repeat(MODEL_PARAM_COLUMNS.length - 1)}, \n`))[0]);
    assert.deepEqual(r.input, {});
    const e = valid((await read(`id,face_url,prompt\n,${F},\n`))[0]);
    assert.equal(e.key, 'line-2', 'an empty id is no id');
    assert.ok(!('id' in e));
  });
});

describe('model parameters', () => {
  const header = 'face_url,prompt,image_size,guidance_scale,num_inference_steps,acceleration,seed,output_format,num_images,lora_scale,enable_safety_checker,sync_mode';

  test('valid values are typed', async () => {
    const rows = await read(
      `${header}\n` +
        `${F}, a portrait ,portrait_16_9,3.5,28,regular,42,webp,4,0.8,no,TRUE\n` +
        `${F},p,640x960,0,1,NONE,0,JPG,1,0,0,1\n` +
        `${F},p,4096 X 64,20,100,none,4294967295,png,2,4,Yes,false\n` +
        `${F},p,Square_HD,+2.50,40.0,regular,1e3,JPEG,3,.5,true,No\n`,
    );
    assert.deepEqual(valid(rows[0]).input, {
      prompt: 'a portrait',
      image_size: 'portrait_16_9',
      guidance_scale: 3.5,
      num_inference_steps: 28,
      acceleration: 'regular',
      seed: 42,
      output_format: 'webp',
      num_images: 4,
      lora_scale: 0.8,
      enable_safety_checker: false,
      sync_mode: true,
    });
    assert.deepEqual(valid(rows[1]).input, {
      prompt: 'p',
      image_size: { width: 640, height: 960 },
      guidance_scale: 0,
      num_inference_steps: 1,
      acceleration: 'none',
      seed: 0,
      output_format: 'jpeg',
      num_images: 1,
      lora_scale: 0,
      enable_safety_checker: false,
      sync_mode: true,
    });
    const r2 = valid(rows[2]).input;
    assert.deepEqual([r2.image_size, r2.guidance_scale, r2.num_inference_steps, r2.seed, r2.num_images, r2.lora_scale, r2.enable_safety_checker, r2.sync_mode], [
      { width: 4096, height: 64 },
      20,
      100,
      4294967295,
      2,
      4,
      true,
      false,
    ]);
    const r3 = valid(rows[3]).input;
    assert.deepEqual([r3.image_size, r3.guidance_scale, r3.num_inference_steps, r3.seed, r3.output_format, r3.lora_scale], ['square_hd', 2.5, 40, 1000, 'jpeg', 0.5]);
    for (const preset of IMAGE_SIZE_PRESETS) assert.equal(valid((await read(`face_url,image_size\n${F},${preset}\n`))[0]).input.image_size, preset);
  });

  const bad: [string, string, RegExp][] = [
    ['image_size', 'huge', /is not one of square_hd, square, portrait_4_3, portrait_16_9, landscape_4_3, landscape_16_9 or WIDTHxHEIGHT/],
    ['image_size', '10x10', /below the minimum 64 \(width\)/],
    ['image_size', '640x5000', /above the maximum 4096 \(height\)/],
    ['image_size', '640x', /not one of/],
    ['image_size', '-640x640', /not one of/],
    ['guidance_scale', 'abc', /not a number/],
    ['guidance_scale', '2,5', /not a number \(use \. as the decimal separator\)/],
    ['guidance_scale', '25', /above the maximum 20/],
    ['guidance_scale', '-0.1', /below the minimum 0/],
    ['guidance_scale', 'Infinity', /not a number/],
    ['num_inference_steps', '2.5', /not a whole number/],
    ['num_inference_steps', '0', /below the minimum 1/],
    ['num_inference_steps', '101', /above the maximum 100/],
    ['acceleration', 'turbo', /not one of none, regular/],
    ['seed', '-1', /below the minimum 0/],
    ['seed', '4294967296', /above the maximum 4294967295/],
    ['seed', '0x10', /not a number/],
    ['seed', '1.5', /not a whole number/],
    ['output_format', 'gif', /not one of png, jpeg, webp/],
    ['num_images', '5', /above the maximum 4/],
    ['num_images', '0', /below the minimum 1/],
    ['lora_scale', '9', /above the maximum 4/],
    ['lora_scale', '-1', /below the minimum 0/],
    ['enable_safety_checker', 'maybe', /not true\/false/],
    ['sync_mode', '2', /not true\/false/],
    ['prompt', 'x'.repeat(10_001), /longer than 10000 characters/],
  ];
  for (const [col, value, reason] of bad) {
    test(`${col}=${value.length > 20 ? `${value.slice(0, 10)}…` : value} is rejected naming the column and value`, async () => {
      const rows = await read(`id,face_url,${col},team\nr1,${F},"${value}",blue\nr2,${F},,blue\n`);
      const r = rejected(rows[0]);
      assert.equal(r.column, col);
      assert.match(r.reason, reason);
      assert.ok(r.reason.includes(JSON.stringify(value.length > 80 ? `${value.slice(0, 77)}...` : value)), `the reason quotes the value: ${r.reason}`);
      assert.equal(rows[0]!.key, 'r1', 'a rejected row keeps its key');
      assert.equal(valid(rows[1]).key, 'r2', 'the next row goes on');
    });
  }

  test('a value with a newline is quoted on one line in the reason', async () => {
    const r = rejected((await read(`face_url,image_size\n${F},"big\nsize"\n`))[0]);
    assert.ok(r.reason.startsWith('"big\\nsize" is not one of'), r.reason);
  });
});

describe('face_url', () => {
  test('kinds: http(s), data:image base64, s3://, local paths (relative, nested, absolute)', async () => {
    const rows = await read(
      'face_url\n' +
        'https://a.example/f.png?x=1\n' +
        'HTTP://a.example/f.png\n' +
        '"data:image/png;base64,iVBORw0KGgo="\n' +
        '"data:image/jpeg;name=a.jpg;base64,/9j/4AAQ"\n' +
        's3://my-bucket/faces/a.png\n' +
        'face.png\n' +
        './faces/b.JPG\n' +
        `${join(dir, 'face.png')}\n`,
    );
    assert.deepEqual(rows.map((r) => valid(r).faceKind), ['http', 'http', 'data', 'data', 's3', 'local', 'local', 'local']);
    assert.equal(valid(rows[5]).localPath, join(dir, 'face.png'));
    assert.equal(valid(rows[6]).localPath, join(dir, 'faces', 'b.JPG'));
    assert.equal(valid(rows[7]).localPath, join(dir, 'face.png'));
    assert.equal(valid(rows[0]).localPath, undefined);
  });

  test('missing, non-regular and non-image local files are rejected naming the path', async () => {
    const rows = await read('face_url\nmissing.png\nfaces/sub.png\nnotes.txt\n');
    const missing = rejected(rows[0]);
    assert.equal(missing.column, 'face_url');
    assert.match(missing.reason, /local file "missing.png" does not exist/);
    assert.equal(missing.reason, `local file "missing.png" does not exist ("missing.png" in the manifest's folder)`, 'names the path in the folder, not the absolute one');
    assert.ok(!missing.reason.includes(dir));
    assert.match(rejected(rows[1]).reason, /"faces\/sub.png" is not a regular file/);
    assert.match(rejected(rows[2]).reason, /"notes.txt" is not a .png, .jpg, .jpeg or .webp image/);
  });

  test('local faces must really be inside the manifest folder: ../, absolute paths outside and links out are rejected', async () => {
    const outside = await mkdtemp(join(tmpdir(), 'pb-outside-'));
    const base = join(dir, 'nested');
    try {
      await writeFile(join(outside, 'x.png'), 'png');
      await mkdir(base, { recursive: true });
      await writeFile(join(base, 'in.png'), 'png');
      await symlink(join(outside, 'x.png'), join(base, 'out-link.png'));
      await symlink('in.png', join(base, 'in-link.png'));
      await symlink(outside, join(base, 'out-dir'));
      const text = `face_url\nin.png\nin-link.png\n${join(base, 'in.png')}\n../face.png\n${join(outside, 'x.png')}\nout-link.png\nout-dir/x.png\n`;
      const rows = await collect(Readable.from([text]), { baseDir: base });
      assert.deepEqual(rows.slice(0, 3).map((r) => valid(r).localPath), [join(base, 'in.png'), join(base, 'in.png'), join(base, 'in.png')], 'real paths');
      assert.match(rejected(rows[3]).reason, /^local file "..\/face.png" is outside the manifest's folder/);
      assert.match(rejected(rows[4]).reason, /is outside the manifest's folder/);
      assert.equal(rejected(rows[5]).reason, `local file "out-link.png" is a link to a file outside the manifest's folder`);
      assert.equal(rejected(rows[6]).reason, `local file "out-dir/x.png" is a link to a file outside the manifest's folder`);
      for (const r of rows.slice(3)) assert.equal(rejected(r).column, 'face_url');
    } finally {
      await rm(outside, { recursive: true, force: true });
      await rm(base, { recursive: true, force: true });
    }
  });

  test("s3:// faces are checked against the run's rule: FACE_PREFIXES, FACE_BUCKETS and the manifest's folder", async () => {
    const cfg = { S3_BUCKET: 'ours', S3_PREFIX: 'p/', FACE_BUCKETS: ['shared'], FACE_PREFIXES: ['s3://ours/faces/'], DROP_PREFIX: 'incoming/' };
    const s3 = s3FacePolicy(cfg, faceRuleFor(cfg, 's3://ours/incoming/teamA/m.csv'));
    const rows = await collect(
      Readable.from([
        `face_url\ns3://ours/faces/a.png\ns3://shared/any/b.png\ns3://ours/incoming/teamA/x/c.png\ns3://ours/p/a.png\ns3://other/a.png\ns3://ours/faces/../q/a.png\n`,
      ]),
      { s3 },
    );
    assert.deepEqual(rows.slice(0, 3).map((r) => valid(r).faceKind), ['s3', 's3', 's3']);
    assert.equal(
      rejected(rows[3]).reason,
      `"s3://ours/p/a.png" is outside the faces this run may read (FACE_PREFIXES s3://ours/faces/, s3://shared/, or the manifest's folder s3://ours/incoming/teamA/)`,
    );
    assert.match(rejected(rows[4]).reason, /"s3:\/\/other\/a.png" is outside the faces this run may read/);
    assert.match(rejected(rows[5]).reason, /has \. or \.\. in its key/);
  });

  test('MAX_ROW_BYTES: the id, the face URL (not a data: URI) and passthrough columns together, naming the column that crosses', async () => {
    const data = `"data:image/png;base64,${'A'.repeat(400)}"`;
    const text = `id,face_url,prompt,a,b\nr1,${F},${'p'.repeat(300)},${'x'.repeat(40)},\nr2,${F},,${'x'.repeat(60)},${'y'.repeat(60)}\n${'i'.repeat(101)},${F},,,\nr4,${data},,,\n`;
    const rows = await collect(Readable.from([text]), { maxRowBytes: 100 });
    assert.deepEqual(valid(rows[0]).extra, { a: 'x'.repeat(40), b: '' }, 'a long prompt does not count (the model schema bounds it)');
    assert.equal(rejected(rows[1]).column, 'b');
    assert.match(rejected(rows[1]).reason, /^takes the row above MAX_ROW_BYTES \(100 bytes for the id, the face URL and the passthrough columns together\)/);
    assert.equal(rejected(rows[2]).column, 'id');
    assert.equal(valid(rows[3]).faceKind, 'data');
  });

  test('local paths without a base directory are rejected, absolute ones too', async () => {
    const rows = await collect(Readable.from([`face_url\nface.png\n${join(dir, 'face.png')}\n`]), {});
    assert.match(rejected(rows[0]).reason, /cannot be resolved: the manifest's folder is not known/);
    assert.match(rejected(rows[1]).reason, /cannot be resolved/);
  });

  test('bad schemes, bad data: and s3: URLs and empty cells are rejected', async () => {
    const cases: [string, RegExp][] = [
      ['ftp://x/y.png', /unsupported scheme ftp:/],
      ['javascript:alert(1)', /unsupported scheme javascript:/],
      ['file:///etc/passwd', /unsupported scheme file:/],
      ['"data:text/html;base64,PGI+"', /not a base64 image/],
      ['"data:image/png,rawbytes"', /not a base64 image/],
      ['"data:image/png;base64,not base64!"', /payload is not base64/],
      ['"data:image/png;base64,"', /payload is not base64/],
      ['s3://my-bucket', /not an s3:\/\/bucket\/key URL/],
      ['s3://B/key', /not an s3:\/\/bucket\/key URL/],
      ['https://', /not a valid URL/],
      ['http://exa mple.com/x.png', /not a valid URL/],
    ];
    const rows = await read(`face_url,seed\n${cases.map(([u]) => `${u},1`).join('\n')}\n,1\n`);
    cases.forEach(([url, reason], i) => {
      const r = rejected(rows[i]);
      assert.equal(r.column, 'face_url', url);
      assert.match(r.reason, reason, url);
    });
    assert.match(rejected(rows[cases.length]).reason, /is empty/);
  });
});

describe('faces: look-alikes and corners', () => {
  test('a scheme is only a scheme at the start: xhttps:, xdata:, xs3: are refused as schemes of their own', async () => {
    const cases: [string, RegExp][] = [
      ['xhttps://a.example/f.png', /has the unsupported scheme xhttps:/],
      ['"xdata:image/png;base64,iVBORw0KGgo="', /has the unsupported scheme xdata:/],
      ['xs3://my-bucket/faces/a.png', /has the unsupported scheme xs3:/],
      ['"data:image/png;base64x,iVBORw0KGgo="', /is a data: URI but not a base64 image/],
      ['data:image/png;base64X', /is a data: URI but not a base64 image/],
      ['"data:image/png;base64,!!iVBORw0KGgo="', /is a data: URI whose payload is not base64/],
      ['face.png.txt', /"face.png.txt" is not a .png, .jpg, .jpeg or .webp image/],
    ];
    const rows = await read(`face_url\n${cases.map(([u]) => u).join('\n')}\n`);
    cases.forEach(([url, reason], i) => assert.match(rejected(rows[i]).reason, reason, url));
  });

  test('local paths: a colon inside a name is no scheme, nor is a drive letter; unreadable paths and folders say why', async () => {
    await writeFile(join(dir, 'faces', 'a:b.png'), 'png');
    const rows = await read('face_url\nfaces/a:b.png\nc:/faces/a.png\nC:\\faces\\a.png\nface.png/x.png\n');
    assert.equal(valid(rows[0]).localPath, join(dir, 'faces', 'a:b.png'));
    assert.match(rejected(rows[1]).reason, /^local file "c:\/faces\/a.png" does not exist/);
    assert.match(rejected(rows[2]).reason, /^local file "C:\\\\faces\\\\a.png" does not exist/);
    assert.equal(rejected(rows[3]).reason, 'local file "face.png/x.png" cannot be read (ENOTDIR; "face.png/x.png" in the manifest\'s folder)');
    const gone = await collect(Readable.from(['face_url\nface.png\n']), { baseDir: join(dir, 'no-such-folder') });
    assert.equal(rejected(gone[0]).reason, 'local path "face.png" cannot be resolved: the manifest\'s folder cannot be read (ENOENT)');
  });

  test('a data: face is stored with its declared image type, anything else as bytes', () => {
    const png = Buffer.from('89504e470d0a1a0a', 'hex');
    const cases: [string, string, string][] = [
      ['image/png', 'image/png', 'png'],
      ['IMAGE/JPG;name=a.jpg', 'image/jpg', 'jpg'],
      ['image/jpeg', 'image/jpeg', 'jpg'],
      ['image/webp', 'image/webp', 'webp'],
      ['image/gif', 'image/gif', 'gif'],
      ['image/bmp', 'application/octet-stream', 'bin'],
    ];
    for (const [declared, contentType, ext] of cases) {
      assert.deepEqual(decodeDataFace(`data:${declared};base64,${png.toString('base64')}`), { bytes: png, contentType, ext }, declared);
    }
  });
});

describe('faces checked elsewhere, s3 policy corners, MAX_ROW_BYTES at the limit', () => {
  test('local faces checked on the starting machine: its refusals stand, the rest are taken as uploaded without looking at files here', async () => {
    const checkedLocalFaces = new Map([['bad.png', 'local file "bad.png" does not exist ("bad.png" in the manifest\'s folder)']]);
    const rows = await collect(Readable.from(['face_url\nbad.png\nelsewhere/only-there.png\n']), { baseDir: '/srv/m', checkedLocalFaces });
    assert.equal(rejected(rows[0]).reason, checkedLocalFaces.get('bad.png'));
    assert.deepEqual([valid(rows[1]).faceKind, valid(rows[1]).localPath], ['local', '/srv/m/elsewhere/only-there.png']);
  });

  test('the face rule: never-faces win over FACE_PREFIXES; a drop upload reads only its own folder; links to our own S3 are judged alike', () => {
    const cfg = { S3_BUCKET: 'ours', S3_PREFIX: 'p/', FACE_BUCKETS: ['shared'], FACE_PREFIXES: ['s3://ours/'], DROP_PREFIX: 'in/coming/', S3_ENDPOINT: 'http://s3.internal:9000' };
    assert.deepEqual(faceRuleFor(cfg, 's3://ours/in/coming/teamA/m.csv'), { prefixes: ['s3://ours/', 's3://shared/'], drop: 's3://ours/in/coming/', folder: 's3://ours/in/coming/teamA/' });
    assert.equal(faceRuleFor(cfg, 's3://ours/in/coming/m.csv').folder, undefined, 'the top of the drop folder is every team\'s');
    assert.equal(faceRuleFor(cfg, '/srv/m.csv').folder, undefined, 'a local manifest has no S3 folder');
    const policy = s3FacePolicy(cfg, faceRuleFor(cfg, 's3://ours/in/coming/teamA/m.csv'));
    assert.equal(s3FaceRefusal('s3://ours/anything/a.png', policy), undefined, 'FACE_PREFIXES s3://ours/');
    assert.equal(s3FaceRefusal('s3://ours/in/coming/teamA/a.png', policy), undefined, "the manifest's folder");
    assert.match(s3FaceRefusal('s3://ours/p/runs/r1/images/x/0.png', policy)!, /is in s3:\/\/ours\/p\/runs\/, where the service keeps its own files: never a face$/);
    assert.match(s3FaceRefusal('s3://ours/in/failed/teamB/m.csv', policy)!, /is in s3:\/\/ours\/in\/failed\/, where the service keeps its own files/);
    assert.match(s3FaceRefusal('s3://ours/in/processed/r/m.csv', policy)!, /is in s3:\/\/ours\/in\/processed\//);
    assert.match(s3FaceRefusal('s3://ours/in/coming/teamB/a.png', policy)!, /is a drop-folder upload \(s3:\/\/ours\/in\/coming\/\) outside this manifest's folder s3:\/\/ours\/in\/coming\/teamA\/: never a face/);
    assert.match(s3FaceRefusal('s3://ours/p/./a.png', policy)!, /has \. or \.\. in its key/);
    assert.equal(s3FaceRefusal('https://ours/p/a.png', policy), '"https://ours/p/a.png" is not an s3://bucket/key URL');
    // http(s) addresses of the service's own S3 (path-style, virtual-hosted, AWS) are judged as the object they name.
    assert.match(faceRuleRefusal('http://s3.internal:9000/ours/p/runs/r1/inputs/a.png?X-Amz-Signature=x', policy)!, /reaches s3:\/\/ours\/p\/runs\/r1\/inputs\/a.png on the service's S3, which is in s3:\/\/ours\/p\/runs\//);
    assert.match(faceRuleRefusal('http://ours.s3.internal:9000/in/coming/teamB/a.png', policy)!, /which is a drop-folder upload/);
    assert.match(faceRuleRefusal('https://ours.s3.eu-west-1.amazonaws.com/p/runs/r/images/k/0.png', policy)!, /which is in s3:\/\/ours\/p\/runs\//);
    assert.match(faceRuleRefusal('https://s3.amazonaws.com/ours/p/runs/r/images/k/0.png', policy)!, /which is in s3:\/\/ours\/p\/runs\//);
    assert.match(faceRuleRefusal('http://s3.internal:9000/ours/p/runs%2Fr1/a.png', policy)!, /which is in s3:\/\/ours\/p\/runs\//, 'an encoded slash is the same key');
    assert.equal(faceRuleRefusal('http://s3.internal:9000/ours/in/coming/teamA/a.png', policy), undefined);
    assert.equal(faceRuleRefusal('http://s3.internal:9001/ours/p/runs/r1/a.png', policy), undefined, 'another port is another server');
    assert.equal(faceRuleRefusal('https://other.s3.amazonaws.com/p/runs/a.png', policy), undefined, "another AWS bucket is not the service's");
    assert.equal(faceRuleRefusal('https://cdn.example.com/ours/p/runs/a.png', policy), undefined);
  });

  test('MAX_ROW_BYTES is inclusive, and the face URL counts', async () => {
    const face = 'https://a.example/f.png'; // 23 bytes
    const text = `id,face_url,note\nabc,${face},xy\nabcd,${face},xy\n`;
    const rows = await collect(Readable.from([text]), { maxRowBytes: 3 + 23 + 4 + 2 });
    assert.deepEqual(valid(rows[0]).extra, { note: 'xy' }, 'exactly the limit: id 3 + face 23 + "note" 4 + "xy" 2');
    assert.equal(rejected(rows[1]).column, 'note', 'one byte more, found at the passthrough column');
    const tight = await collect(Readable.from([`id,face_url\nabc,${face}\nabd,https://a.example/ff.png\n`]), { maxRowBytes: 3 + 23 });
    assert.equal(valid(tight[0]).faceUrl, face);
    assert.equal(rejected(tight[1]).column, 'face_url', 'the face URL takes it over');
  });
});

describe('cells inside quotes', () => {
  test('spaces inside the quotes of a header name, id, face or parameter are trimmed (passthrough cells are kept as written)', async () => {
    const rows = await read(`" face_url ","  id  "," seed ",note\n"  ${F}  ","  k1  "," 7 "," as written "\n`);
    const r = valid(rows[0]);
    assert.deepEqual([r.faceUrl, r.id, r.key, r.input, r.extra], [F, 'k1', 'k1', { seed: 7 }, { note: ' as written ' }]);
  });

  test('several columns without a name are allowed, and the id column need not come first', async () => {
    const rows = await read(`face_url,,note,,id\n${F},x,n,y,k1\n${F},,n,,k1\n`);
    assert.deepEqual([valid(rows[0]).key, valid(rows[0]).extra], ['k1', { note: 'n' }]);
    assert.match(rejected(rows[1]).reason, /repeats the id of line 2/);
  });

  test('without a face column, the columns found are listed; names that are not plain are quoted', async () => {
    await manifestError('photo,,"we""ird",id\nx,,,\n', /^no face_url column \(or image_url, url\); columns found: photo, "we\\"ird", id$/);
  });
});

describe('row keys and ids', () => {
  test('toRowKey: S3-safe ids are their own key; other ids are collapsed, cut and end with a hash of the id', () => {
    const hash = (id: string) => createHash('sha256').update(id).digest('hex').slice(0, 10);
    assert.equal(toRowKey('abc-DEF_1.2'), 'abc-DEF_1.2');
    assert.equal(toRowKey('a__b'), 'a__b', 'an S3-safe id keeps its exact key');
    assert.equal(toRowKey('a'.repeat(128)), 'a'.repeat(128));
    assert.equal(toRowKey('a/b'), `a_b_${hash('a/b')}`);
    assert.equal(toRowKey('a / b??c'), `a_b_c_${hash('a / b??c')}`);
    assert.equal(toRowKey('é ü/../x'), `_.._x_${hash('é ü/../x')}`);
    assert.equal(toRowKey('ＡＢＣ１'), `ABC1_${hash('ＡＢＣ１')}`, 'NFKC folds full-width forms');
    assert.equal(toRowKey('.'), `_${hash('.')}`);
    assert.equal(toRowKey('..'), `_${hash('..')}`);
    assert.equal(toRowKey(''), `_${hash('')}`);
    assert.equal(toRowKey('日本'), `_${hash('日本')}`);
    assert.equal(toRowKey('a__b!'), `a_b_${hash('a__b!')}`, 'underscores of the id and of a replaced run collapse into one');
    assert.equal(toRowKey('é..'), `_.._${hash('é..')}`, 'dots are dropped only when they are the whole key');
    assert.equal(toRowKey('..é'), `.._${hash('..é')}`);
    assert.equal(toRowKey('a'.repeat(300)), `${'a'.repeat(117)}_${hash('a'.repeat(300))}`);
    assert.equal(toRowKey('x/'.repeat(100)).length, 128);
    for (const id of ['a b', '../..', '%2F', '\u0000', 'x'.repeat(500), '😀']) assert.match(toRowKey(id), /^[A-Za-z0-9._-]{1,128}$/);
    assert.equal(lineKey(12), 'line-12');
    assert.ok(isReservedId('line-5') && isReservedId('LINE-05') && !isReservedId('line-5a') && !isReservedId('line_5') && !isReservedId('my-line-5'));
  });

  test('ids become keys; repeated ids and reserved ids are rejected; keys stay distinct', async () => {
    const hash = (id: string) => createHash('sha256').update(id).digest('hex').slice(0, 10);
    const rows = await read(
      'id,face_url\n' +
        ' a/b ,https://a.example/1.png\n' + // 2: key a_b_<hash>
        'a/b,https://a.example/2.png\n' + // 3: same id as line 2
        'x,https://a.example/3.png\n' + // 4
        'x,https://a.example/4.png\n' + // 5: repeats line 4
        'line-5,https://a.example/5.png\n' + // 6: reserved
        ',https://a.example/6.png\n' + // 7: no id
        'LINE-9,https://a.example/7.png\n' + // 8: reserved in any case
        'line-５,https://a.example/8.png\n' + // 9: lossy, so its key ends with a hash and cannot be a line key
        'line-5b,https://a.example/9.png\n', // 10: fine
    );
    assert.deepEqual(
      rows.map((r) => [r.line, r.key, r.id, isRejected(r) ? r.rejected.column : 'ok']),
      [
        [2, `a_b_${hash('a/b')}`, 'a/b', 'ok'],
        [3, 'line-3', 'a/b', 'id'],
        [4, 'x', 'x', 'ok'],
        [5, 'line-5', 'x', 'id'],
        [6, 'line-6', 'line-5', 'id'],
        [7, 'line-7', undefined, 'ok'],
        [8, 'line-8', 'LINE-9', 'id'],
        [9, `line-5_${hash('line-５')}`, 'line-５', 'ok'],
        [10, 'line-5b', 'line-5b', 'ok'],
      ],
    );
    assert.match(rejected(rows[1]).reason, /^"a\/b" repeats the id of line 2 \(both give the row key "a_b_[0-9a-f]{10}"\)$/);
    assert.match(rejected(rows[3]).reason, /^"x" repeats the id of line 4$/);
    assert.match(rejected(rows[4]).reason, /"line-5" is reserved/);
    assert.match(rejected(rows[6]).reason, /reserved/);
    assert.equal(new Set(rows.map((r) => r.key)).size, rows.length, 'no two rows share a key');
  });

  test('distinct ids never share a key: non-ASCII ids, and ids that differ only where sanitising changes them', async () => {
    const rows = await read('id,face_url\n田中,https://a.example/1.png\nمحمد,https://a.example/2.png\n山田,https://a.example/3.png\nface 1,https://a.example/4.png\nface/1,https://a.example/5.png\nface_1,https://a.example/6.png\n');
    assert.deepEqual(rows.map((r) => (isRejected(r) ? r.rejected.reason : 'ok')), ['ok', 'ok', 'ok', 'ok', 'ok', 'ok']);
    assert.equal(new Set(rows.map((r) => r.key)).size, 6);
    assert.equal(rows[5]!.key, 'face_1', 'an S3-safe id keeps its exact key');
    for (const r of rows) assert.match(r.key, /^[A-Za-z0-9._-]{1,128}$/);
  });

  test('an id counts as seen even when its row is rejected for something else', async () => {
    const rows = await read(`id,face_url,seed\na,${F},-1\na,${F},1\nb,${F}\nb,${F},2\n`);
    assert.equal(rejected(rows[0]).column, 'seed');
    assert.match(rejected(rows[1]).reason, /repeats the id of line 2/);
    assert.equal(rejected(rows[2]).column, '*');
    assert.match(rejected(rows[3]).reason, /repeats the id of line 4/);
  });
});

describe('row shape', () => {
  test('a row with a different field count is rejected; the rest go on', async () => {
    const rows = await read(`face_url,seed\n${F},1,extra\n${F}\n${F},2\n"${F}","3"\n`);
    assert.deepEqual(rejected(rows[0]), { column: '*', reason: 'expected 2 fields like the header, found 3' });
    assert.deepEqual(rejected(rows[1]), { column: '*', reason: 'expected 2 fields like the header, found 1' });
    assert.equal(valid(rows[2]).input.seed, 2);
    assert.equal(valid(rows[3]).input.seed, 3);
  });

  test('items have exactly the documented fields', async () => {
    const [ok, bad] = await read(`id,face_url,seed,team\nr1,face.png,7,red\nr2,${F},x,blue\n`);
    assert.deepEqual(ok, { line: 2, key: 'r1', id: 'r1', faceUrl: 'face.png', faceKind: 'local', localPath: join(dir, 'face.png'), input: { seed: 7 }, extra: { team: 'red' }, ordinal: 1 });
    assert.deepEqual(bad, { line: 3, key: 'r2', id: 'r2', faceUrl: F, rejected: { column: 'seed', reason: '"x" is not a number' }, ordinal: 2 });
  });

  test('reading the same bytes twice gives the same items', async () => {
    const text = `id,face_url,prompt,image_size,seed,x\na,${F},"p\nq",640x960,1,m\n,${F},,huge,,n\na,face.png,,,,\n,missing.png,,,,\n`;
    assert.deepEqual(await read(text), await read(text));
  });
});

describe('file-level problems are ManifestErrors with one-line messages', () => {
  test('empty file, BOM only, blank lines only', async () => {
    await manifestError('', /the manifest is empty/);
    await manifestError('\ufeff', /the manifest is empty/);
    await manifestError('\n\r\n  \n,,\n', /the manifest is empty/);
  });

  test('header only (with or without blank lines after it)', async () => {
    await manifestError('face_url\n', /header but no rows/);
    await manifestError('face_url,id\r\n\r\n , \r\n', /header but no rows/);
  });

  test('no face_url column: the columns found are listed', async () => {
    await manifestError('name,photo\nx,y\n', /^no face_url column \(or image_url, url\); columns found: name, photo$/);
    await manifestError('"a\nb",c\nx,y\n', /columns found: "a\\nb", c$/);
  });

  test('duplicate header names (case-insensitive)', async () => {
    await manifestError(`face_url,Face_URL\n${F},${F}\n`, /column "Face_URL" appears twice in the header \(columns 1 and 2\)/);
    await manifestError(`face_url,seed,SEED\n${F},1,2\n`, /"SEED" appears twice/);
  });

  test('unclosed quote, stray quotes: not a CSV file, naming the line the record starts on', async () => {
    await manifestError(`face_url,prompt\n${F},"a\nb"\n${F},"never closed\nmore\n`, /^not a CSV file: the quoted field in the record starting on line 4 is never closed/);
    await manifestError(`face_url,prompt\n${F},ok\n${F},5'10" tall\n`, /^not a CSV file: the record starting on line 3 has a quote inside an unquoted field/);
    await manifestError(`face_url,prompt\n${F},"a"b\n`, /^not a CSV file: the record starting on line 2 has characters after a closing quote/);
  });

  test('binary data: a PNG, NUL bytes in a later row, bytes that are not UTF-8', async () => {
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52, 0, 0, 1, 0, 0, 0, 1, 0, 8, 6]);
    await manifestError(png, /^not a CSV file/);
    await manifestError(Buffer.concat([Buffer.from(`face_url,seed\n${F},1\n${F},`), Buffer.from([0, 1, 2]), Buffer.from('\n')]), /^not a CSV file: line 3 holds NUL bytes/);
    await manifestError(Buffer.concat([Buffer.from(`face_url,prompt\n${F},caf`), Buffer.from([0xe9]), Buffer.from('\n')]), /^not a CSV file: line 2 holds bytes that are not UTF-8/);
    await manifestError(Buffer.from([0xfe, 0xff, 0, 0x66, 0, 0x61]), /^not a CSV file/);
  });

  test('a failing source stream', async () => {
    const failing = new Readable({
      read() {
        this.push(`face_url\n${F}\n`);
        this.destroy(new Error('disk on fire\nsecond line'));
      },
    });
    await manifestError(failing, /^cannot read the manifest: disk on fire$/);
  });
});

describe('streaming', () => {
  // Under `npm run mutate` the instrumented reader takes ~30 s here for every mutant; the other
  // tests of this file cover the same code.
  test('100k rows from a generator stream through with flat memory', { skip: '__stryker__' in globalThis && 'slow under mutation testing' }, async () => {
    function* gen() {
      yield 'id,face_url,prompt,image_size,seed,team\n';
      for (let i = 0; i < 100_000; i++) yield `r${i},https://a.example/${i % 97}.png,"a portrait, full body",portrait_4_3,${i},t${i % 7}\n`;
    }
    setFlagsFromString('--expose-gc');
    const gc = runInNewContext('gc') as () => void;
    const live = () => {
      gc();
      return process.memoryUsage().heapUsed;
    };
    const before = live();
    let peak = 0;
    let n = 0;
    let bad = 0;
    let lastLine = 0;
    for await (const r of readManifest(Readable.from(gen()), {})) {
      n++;
      if (isRejected(r)) bad++;
      lastLine = r.line;
      if (n % 25_000 === 0) peak = Math.max(peak, live());
    }
    assert.equal(n, 100_000);
    assert.equal(bad, 0);
    assert.equal(lastLine, 100_001);
    // What stays live is the set of 100k id keys (~6 MiB); holding the rows would take ~50 MiB.
    const grew = (peak - before) / 2 ** 20;
    assert.ok(grew < 24, `live heap grew by ${grew.toFixed(1)} MiB`);
  });

  test('a consumer that stops early stops the source', async () => {
    let produced = 0;
    const source = Readable.from(
      (function* () {
        yield 'face_url\n';
        for (;;) {
          produced++;
          yield `${F}\n`;
        }
      })(),
    );
    let n = 0;
    for await (const _ of readManifest(source, {})) if (++n === 10) break;
    assert.ok(source.destroyed, 'source destroyed');
    assert.ok(produced < 100_000, `source kept producing (${produced})`);
  });
});

describe('model input schema', () => {
  test('MODEL_PARAM_COLUMNS are the optional fields', () => {
    assert.deepEqual([...MODEL_PARAM_COLUMNS].sort(), [
      'acceleration',
      'enable_safety_checker',
      'guidance_scale',
      'image_size',
      'lora_scale',
      'num_images',
      'num_inference_steps',
      'output_format',
      'prompt',
      'seed',
      'sync_mode',
    ]);
    assert.equal(DEFAULT_PROMPT, 'Face to full portrait');
    assert.deepEqual(OUTPUT_FORMATS, ['png', 'jpeg', 'webp']);
  });

  test('falInputSchema: image_urls required, the rest optional and ranged', () => {
    assert.ok(falInputSchema.safeParse({ image_urls: [F] }).success);
    assert.ok(falInputSchema.safeParse({ image_urls: [F], image_size: { width: 64, height: 4096 }, seed: 4294967295, num_images: 4 }).success);
    assert.ok(!falInputSchema.safeParse({}).success);
    assert.ok(!falInputSchema.safeParse({ image_urls: [] }).success);
    assert.ok(!falInputSchema.safeParse({ image_urls: [F], image_size: { width: 63, height: 100 } }).success);
    assert.ok(!falInputSchema.safeParse({ image_urls: [F], guidance_scale: 20.5 }).success);
    assert.ok(!falInputSchema.safeParse({ image_urls: [F], acceleration: 'high' }).success);
  });

  test('effectiveNumImages / effectiveOutputFormat apply the defaults', () => {
    assert.equal(effectiveNumImages({}), 1);
    assert.equal(effectiveNumImages({ num_images: 3 }), 3);
    assert.equal(effectiveNumImages({ num_images: 'x' }), 1);
    assert.equal(effectiveOutputFormat({}), 'png');
    assert.equal(effectiveOutputFormat({ output_format: 'webp' }), 'webp');
    assert.equal(effectiveOutputFormat({ output_format: 'gif' }), 'png');
  });
});
