// The manifest contract: encoding, quoting, columns, per-row validation, file-level errors.
import assert from 'node:assert/strict';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { before, test } from 'node:test';
import { ManifestError, isRejected, readManifest, type ManifestRow, type RejectedRow, type ValidRow } from '../src/producer/manifest.ts';
import { toRowKey } from '../src/producer/rowKey.ts';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pb-manifest-'));
  await writeFile(join(dir, 'face.png'), 'png');
});

async function read(text: string | Buffer): Promise<ManifestRow[]> {
  const rows: ManifestRow[] = [];
  for await (const r of readManifest(Readable.from([text]), { baseDir: dir })) rows.push(r);
  return rows;
}
const valid = (r: ManifestRow | undefined) => {
  assert.ok(r && !isRejected(r), `expected a valid row, got ${JSON.stringify(r)}`);
  return r as ValidRow;
};
const rejected = (r: ManifestRow | undefined) => {
  assert.ok(r && isRejected(r), `expected a rejected row, got ${JSON.stringify(r)}`);
  return (r as RejectedRow).rejected;
};

test('BOM, CRLF, header case and spaces', async () => {
  const rows = await read('\ufeff ID , Face_URL \r\nx,https://a.example/1.png\r\ny,https://a.example/2.png\r\n');
  assert.deepEqual(rows.map((r) => [r.line, r.key, r.faceUrl]), [[2, 'x', 'https://a.example/1.png'], [3, 'y', 'https://a.example/2.png']]);
});

test('quoted commas and newlines; line numbers count the lines a record spans', async () => {
  const rows = await read('face_url,prompt\nhttps://a.example/1.png,"tall, smiling\nin a ""red"" coat"\nhttps://a.example/2.png,\n\nhttps://a.example/3.png,x\n');
  assert.equal(valid(rows[0]).input.prompt, 'tall, smiling\nin a "red" coat');
  assert.deepEqual(rows.map((r) => [r.line, r.key]), [[2, 'line-2'], [4, 'line-4'], [6, 'line-6']]);
  assert.equal(valid(rows[1]).input.prompt, undefined, 'empty cell = model default');
});

test('aliases image_url and url name the face column', async () => {
  for (const col of ['image_url', 'url']) assert.equal((await read(`${col}\nhttps://a.example/f.png\n`))[0]!.faceUrl, 'https://a.example/f.png');
});

test('every model parameter: valid values are typed, invalid ones rejected with the column', async () => {
  const good = await read(
    'face_url,prompt,image_size,guidance_scale,num_inference_steps,acceleration,seed,output_format,num_images,lora_scale,enable_safety_checker,sync_mode\n' +
      'https://a.example/f.png,p,portrait_16_9,3.5,28,regular,42,webp,4,0.8,no,TRUE\n' +
      'https://a.example/f.png,,640x960,,,,,,,,,\n',
  );
  assert.deepEqual(valid(good[0]).input, {
    prompt: 'p', image_size: 'portrait_16_9', guidance_scale: 3.5, num_inference_steps: 28, acceleration: 'regular', seed: 42,
    output_format: 'webp', num_images: 4, lora_scale: 0.8, enable_safety_checker: false, sync_mode: true,
  });
  assert.deepEqual(valid(good[1]).input, { image_size: { width: 640, height: 960 } });
  const bad: [string, string, RegExp][] = [
    ['image_size', 'huge', /not one of square_hd.*WIDTHxHEIGHT/],
    ['image_size', '10x10', /minimum 64/],
    ['guidance_scale', 'abc', /not a number/],
    ['guidance_scale', '25', /maximum 20/],
    ['num_inference_steps', '2.5', /whole number/],
    ['acceleration', 'turbo', /not one of none, regular/],
    ['seed', '-1', /minimum 0/],
    ['output_format', 'gif', /not one of png, jpeg, webp/],
    ['num_images', '5', /maximum 4/],
    ['lora_scale', '9', /maximum 4/],
    ['enable_safety_checker', 'maybe', /true\/false/],
    ['sync_mode', '2', /true\/false/],
  ];
  for (const [col, value, reason] of bad) {
    const r = rejected((await read(`face_url,${col}\nhttps://a.example/f.png,${value}\n`))[0]);
    assert.equal(r.column, col);
    assert.match(r.reason, reason, `${col}=${value}`);
    assert.ok(r.reason.includes(value), 'the reason names the bad value');
  }
});

test('unknown columns are kept as metadata, never as model input', async () => {
  const r = valid((await read('face_url,team,Notes\nhttps://a.example/f.png,blue,"a, b"\n'))[0]);
  assert.deepEqual(r.extra, { team: 'blue', notes: 'a, b' });
  assert.deepEqual(r.input, {});
});

test('face_url kinds: http, data, s3, local (existing or missing), bad schemes', async () => {
  const rows = await read(
    'face_url\nhttps://a.example/f.png\n"data:image/png;base64,iVBORw0KGgo="\ns3://my-bucket/faces/a.png\nface.png\nmissing.png\nftp://x/y.png\n"data:text/html;base64,PGI+"\njavascript:alert(1)\n',
  );
  assert.deepEqual(rows.slice(0, 4).map((r) => valid(r).faceKind), ['http', 'data', 's3', 'local']);
  assert.equal(valid(rows[3]).localPath, join(dir, 'face.png'));
  assert.match(rejected(rows[4]).reason, /local file "missing.png" does not exist/);
  for (const r of rows.slice(5)) assert.equal(rejected(r).column, 'face_url');
});

test('ids: S3-safe keys, repeated ids (also after sanitising) and reserved ids are rejected', async () => {
  const rows = await read('id,face_url\na/b,https://a.example/1.png\na_b,https://a.example/2.png\nx,https://a.example/3.png\nx,https://a.example/4.png\nline-5,https://a.example/5.png\n,https://a.example/6.png\n');
  assert.equal(valid(rows[0]).key, 'a_b');
  assert.match(rejected(rows[1]).reason, /repeats the id of line 2/);
  assert.match(rejected(rows[3]).reason, /repeats the id of line 4/);
  assert.match(rejected(rows[4]).reason, /reserved/);
  assert.equal(valid(rows[5]).key, 'line-7');
  assert.equal(toRowKey('..'), '__');
  assert.equal(toRowKey('é ü/../x'), '_.._x');
  assert.match(toRowKey('a'.repeat(300)), /^a{128}$/);
});

test('a row with a different field count is rejected; the rest go on', async () => {
  const rows = await read('face_url,seed\nhttps://a.example/1.png,1,extra\nhttps://a.example/2.png,2\n');
  assert.match(rejected(rows[0]).reason, /expected 2 fields.*found 3/);
  assert.equal(valid(rows[1]).input.seed, 2);
});

test('file-level problems are ManifestErrors with one-line reasons', async () => {
  const cases: [string | Buffer, RegExp][] = [
    ['', /empty/],
    ['face_url\n', /header but no rows/],
    ['name,photo\nx,y\n', /no face_url column.*name, photo/],
    ['face_url\n"https://a.example/f.png\n', /never closed/],
    [Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 0x49, 0x48, 0x44, 0x52]), /not a CSV file|not a valid CSV/],
    ['face_url,face_url\nx,y\n', /appears twice/],
  ];
  for (const [text, msg] of cases) {
    await assert.rejects(read(text), (err: unknown) => {
      assert.ok(err instanceof ManifestError);
      assert.match(err.message, msg);
      assert.ok(!err.message.includes('\n'), 'one line');
      return true;
    });
  }
});

test('reading is deterministic and streams: 200k rows from a generator, flat memory', async () => {
  function* gen() {
    yield 'id,face_url,seed\n';
    for (let i = 0; i < 200_000; i++) yield `r${i},https://a.example/${i}.png,${i}\n`;
  }
  let n = 0;
  let last: ManifestRow | undefined;
  for await (const r of readManifest(Readable.from(gen()), {})) {
    n++;
    last = r;
  }
  assert.equal(n, 200_000);
  assert.equal(valid(last).line, 200_001);
});
