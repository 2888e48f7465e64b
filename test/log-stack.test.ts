// A logged error's stack trace is scrubbed like its message. A stack keeps the text the error was made
// with, so a secret can be in the stack and not in the message (a library that rewrites the message,
// an error wrapped in another object): the stack is scrubbed on its own, wherever the error sits.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { test } from 'node:test';
import { createLogger } from '../src/core/logger.ts';

const FAL_KEY = 'fal-key-STACK-9c1e77:4b2a';
const PRESIGNED = 'http://127.0.0.1:9/b/k.png?X-Amz-Credential=AKIASTACK&X-Amz-Signature=feedfacecafe0123';

test('a secret only in the stack trace is scrubbed, at the top level and nested', () => {
  const saved = process.env.FAL_KEY;
  process.env.FAL_KEY = FAL_KEY;
  try {
    const out = new PassThrough();
    let text = '';
    out.on('data', (d: Buffer) => (text += d.toString()));
    const log = createLogger('t', 'debug', out);
    const err = new Error(`GET ${PRESIGNED} with Authorization: Key ${FAL_KEY} failed`);
    // V8 writes the stack when it is first read: read it, then rewrite the message.
    void err.stack;
    err.message = 'the download failed';
    assert.ok(err.stack!.includes(FAL_KEY) && !err.message.includes(FAL_KEY), 'the secret is in the stack only');
    log.error({ err }, 'top level');
    log.warn({ detail: { attempt: 2, error: err } }, 'nested');
    log.info({ errors: [err] }, 'in a list');
    const lines = text.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 3);
    for (const secret of [FAL_KEY, 'feedfacecafe0123', 'AKIASTACK']) assert.ok(!text.includes(secret), `${secret} in:\n${text}`);
    const stacks = [(lines[0]!.err as { stack: string }).stack, ((lines[1]!.detail as { error: { stack: string } }).error).stack, (lines[2]!.errors as { stack: string }[])[0]!.stack];
    for (const stack of stacks) {
      assert.match(stack, /X-Amz-Signature=\[redacted\]/);
      assert.match(stack, /Key \[redacted\]/);
      assert.match(stack, /\n\s+at /, 'still a stack trace');
    }
    assert.equal((lines[0]!.err as { message: string }).message, 'the download failed');
  } finally {
    if (saved === undefined) delete process.env.FAL_KEY;
    else process.env.FAL_KEY = saved;
  }
});
