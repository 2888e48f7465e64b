// Secrets stay out of logs and stored state: pino censors known fields and scrubs presigned query
// strings and secret values from every string, and a real run with recognisable keys leaves them in
// no log line (debug level), no Redis file and no S3 object.
import assert from 'node:assert/strict';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../../src/core/logger.ts';
import { lines, ROOT, runCli } from '../helpers/cli.ts';

const FAL_KEY = 'fal-key-RECOGNISABLE-7f3a9c:0b1d';
const AWS_SECRET = 'aws-secret-RECOGNISABLE-51b2e0';
const AWS_TOKEN = 'aws-token-RECOGNISABLE-88d4f1';
const PRESIGNED = 'http://127.0.0.1:9/b/k.png?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20261125%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Security-Token=tok-SECRET-1&X-Amz-Signature=0123456789abcdef';

test('logs redact authorization, FAL_KEY, AWS secrets and presigned query strings', () => {
  const saved = { FAL_KEY: process.env.FAL_KEY, AWS_SECRET_ACCESS_KEY: process.env.AWS_SECRET_ACCESS_KEY };
  process.env.FAL_KEY = FAL_KEY;
  process.env.AWS_SECRET_ACCESS_KEY = AWS_SECRET;
  try {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d: Buffer) => (text += d.toString()));
    const log = createLogger('t', 'debug', out);
    log.info({ headers: { authorization: `Key ${FAL_KEY}` }, cfg: { FAL_KEY, AWS_SECRET_ACCESS_KEY: AWS_SECRET }, url: PRESIGNED }, 'submitting');
    log.warn({ err: new Error(`GET ${PRESIGNED} failed with key ${FAL_KEY}`) }, `retrying ${PRESIGNED}`);
    log.debug(`Authorization: Key ${FAL_KEY}; secret ${AWS_SECRET}`);
    for (const secret of [FAL_KEY, AWS_SECRET, 'tok-SECRET-1', '0123456789abcdef', 'AKIAEXAMPLE']) assert.ok(!text.includes(secret), `${secret} in:\n${text}`);
    assert.equal(lines(text).length, 3);
    assert.match(text, /X-Amz-Signature=\[redacted\]/);
    assert.match(text, /"authorization":"\[redacted\]"/);
  } finally {
    for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
});

async function* files(dir: string): AsyncGenerator<string> {
  for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* files(p);
    else if (e.isFile()) yield p;
  }
}

test('a real run leaves FAL_KEY and the AWS secrets in no log, Redis file or S3 object', { timeout: 120_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pb-secrets-'));
  try {
    // Local faces: they reach fal as presigned URLs signed with the secret (and carrying the token).
    await mkdir(join(dir, 'in', 'faces'), { recursive: true });
    for (const f of ['face-01.png', 'face-02.png', 'face-03.png']) await copyFile(join(ROOT, 'examples', 'faces', f), join(dir, 'in', 'faces', f));
    const manifest = join(dir, 'in', 'm.csv');
    await writeFile(manifest, 'id,face_url,image_size\na,faces/face-01.png,square\nb,faces/face-02.png,square\nc,faces/face-03.png,not-a-size\n');
    const data = join(dir, 'data');
    const r = await runCli(['demo', '--manifest', manifest, '--data-dir', data, '--json'], {
      FAL_KEY,
      AWS_ACCESS_KEY_ID: 'S3RVER', // s3rver checks the key id; it does not verify SigV4 signatures
      AWS_SECRET_ACCESS_KEY: AWS_SECRET,
      AWS_SESSION_TOKEN: AWS_TOKEN,
      LOG_LEVEL: 'debug',
    }).exited;
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(lines(r.stdout).at(-1)!) as { completed: number; rejected: number };
    assert.deepEqual([res.completed, res.rejected], [2, 1]);
    assert.ok(lines(r.stderr).length > 3, 'debug logs were written');

    const hits: string[] = [];
    const check = (where: string, text: string) => {
      for (const s of [FAL_KEY, AWS_SECRET, AWS_TOKEN]) if (text.includes(s)) hits.push(`${s} in ${where}`);
      if (/X-Amz-Signature=[0-9a-f]{16}/i.test(text)) hits.push(`a presigned signature in ${where}`);
    };
    check('stdout', r.stdout);
    check('stderr', r.stderr);
    // Redis (AOF), every S3 object with its metadata, and the run copied out. The emulator's
    // request log (data/emulator) is fal's side: fal holds the presigned URLs we hand it.
    let checked = 0;
    for (const sub of ['redis', 's3', 'runs']) {
      for await (const f of files(join(data, sub))) {
        check(f, (await readFile(f)).toString('latin1'));
        checked++;
      }
    }
    assert.ok(checked > 10, `files checked: ${checked}`);
    assert.deepEqual(hits, []);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
