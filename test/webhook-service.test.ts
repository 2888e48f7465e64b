// The receiver as the service runs it. Its limits under abuse on the full stack (default slots, real
// Redis): bodies that never verify cannot use up its body-read slots. WEBHOOK_PROCESSES: the primary
// keeps that many receivers alive. A receiver that dies (SIGKILL, a crash) is replaced by a new process on the same port, the metrics gauge returns to the full count,
// webhooks keep being recorded meanwhile by the survivor, and SIGTERM stops the replacement too. A port
// already in use is one clear error before anything is forked. Real CLI processes, real Redis, the
// emulator's JWKS and signing key.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { request } from 'node:http';
import { createServer } from 'node:net';
import { after, before, test } from 'node:test';
import { jobIds } from '../src/core/queues.ts';
import { mintWebhookToken, TOKEN_PARAM } from '../src/core/webhookToken.ts';
import { createSigningKey } from '../src/emulator/keys.ts';
import { count, runCli, startCli } from './helpers/processes.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';
import { falBody, partialRequest, signedHeaders, until } from './security/helpers.ts';

const key = createSigningKey();
const LIMIT = 8 * 1024;
let t: TestStack;

before(async () => {
  t = await startTestStack({ workers: false, emulator: { signingKey: key }, env: { WEBHOOK_MAX_BODY_BYTES: String(LIMIT) } });
});
after(() => t.stop());

function ourWebhook(base: string) {
  const requestId = randomUUID();
  const target = { runId: 'run-respawn', key: `r-${requestId.slice(0, 8)}`, attempt: 1 };
  const query = new URLSearchParams({ run: target.runId, row: target.key, attempt: '1', [TOKEN_PARAM]: mintWebhookToken(t.ctx.cfg.WEBHOOK_SECRET!, target) });
  const body = falBody(requestId, 'OK', { images: [{ url: `https://fal.media/files/${requestId}.png` }], seed: 1 });
  return { requestId, url: `${base}?${query}`, headers: signedHeaders(key, { requestId, body }), body };
}

/** POSTs on a connection of its own, so the primary hands each to the next receiver. */
function post(url: string, headers: Record<string, string>, body: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** The process ids whose parent is `pid`. */
function childrenOf(pid: number): number[] {
  try {
    return execFileSync('ps', ['-o', 'pid=', '--ppid', String(pid)], { encoding: 'utf8' })
      .split('\n')
      .map((s) => Number(s.trim()))
      .filter((n) => n > 0);
  } catch {
    return []; // ps exits 1 when there are none
  }
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Signature headers of the right shape whose signature verifies under no key. */
const unsignedHeaders = (requestId: string) => ({ ...signedHeaders(key, { requestId, body: '' }), 'x-fal-webhook-signature': randomBytes(64).toString('hex') });

/** A body sent in pieces without Content-Length (chunked): the receiver only learns its size by reading. */
function postChunked(url: string, headers: Record<string, string>, data: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: 'POST', headers: { ...headers, 'transfer-encoding': 'chunked' } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'ECONNRESET' || (err as NodeJS.ErrnoException).code === 'EPIPE' ? undefined : reject(err)));
    for (let i = 0; i < data.length; i += 1024) req.write(data.subarray(i, i + 1024));
    req.end();
  });
}

test("9 oversized and 9 abandoned bodies without any valid signature, then fal's webhook: recorded, 200 (default 8 slots)", async () => {
  const url = t.ctx.cfg.webhookUrl;
  const counters = t.webhook!.counters;
  const big = Buffer.from(falBody('big', 'OK', { pad: 'x'.repeat(LIMIT) }));
  for (let i = 0; i < 9; i++) assert.equal(await postChunked(url, unsignedHeaders('big'), big), 413);
  for (let i = 0; i < 9; i++) {
    const received = counters.received;
    const req = partialRequest(url, unsignedHeaders('gone'), Buffer.from(falBody('gone', 'OK', { pad: 'x'.repeat(100) })), 10);
    await until(() => counters.received > received, 'the receiver reading the body');
    req.abort();
    await until(() => counters.refused.body > i, `hang-up ${i + 1} seen by the receiver`);
  }
  const h = ourWebhook(url);
  assert.equal(await post(h.url, h.headers, h.body), 200);
  assert.ok(await t.ctx.queues.results.getJob(jobIds.result(h.requestId, 'OK')), 'recorded in Redis');
  assert.equal(counters.refused.busy, 0);
});

test('a receiver process that dies is replaced on the same port; webhooks go on being recorded; SIGTERM stops the replacement too', { timeout: 240_000 }, async () => {
  const cli = startCli(['webhook'], { ...t.local.env, WEBHOOK_PROCESSES: '2', WEBHOOK_PORT: '0', ADMIN_PORT: '0', LOG_LEVEL: 'warn' });
  try {
    await cli.waitFor(/listening on :\d+ in 2 processes \(pids \d+, \d+\); admin on http:\/\/\S+/, 'the receivers listening');
    const [, port, pidA, pidB, admin] = /listening on :(\d+) in 2 processes \(pids (\d+), (\d+)\); admin on (http:\/\/\S+)/.exec(cli.output())!;
    const base = `http://127.0.0.1:${port}/fal/webhook`;
    const gauge = async () => Number(/^portrait_batch_webhook_processes (\d+)$/m.exec(await (await fetch(`${admin}/metrics`)).text())?.[1]);
    assert.equal(await gauge(), 2);

    const victim = Number(pidA);
    process.kill(victim, 'SIGKILL');
    await cli.waitFor(new RegExp(`webhook receiver process \\d \\(pid ${victim}\\) exited \\(SIGKILL\\); starting another in \\d+ ms`), 'the death reported');
    // The survivor takes every webhook while the replacement starts.
    const during = Array.from({ length: 4 }, () => ourWebhook(base));
    assert.deepEqual(await Promise.all(during.map((h) => post(h.url, h.headers, h.body))), during.map(() => 200));

    let replacement = 0;
    await until(
      async () => {
        replacement = childrenOf(cli.child.pid!).find((p) => p !== victim && p !== Number(pidB)) ?? 0;
        return replacement > 0 && (await gauge()) === 2;
      },
      'a new receiver process listening, the gauge back at 2',
      60_000,
    ).catch(async (err: Error) => assert.fail(`${err.message} (receivers ${childrenOf(cli.child.pid!).join(', ')}, gauge ${await gauge()}):\n${cli.output().slice(-1500)}`));
    assert.equal(alive(victim), false);

    // The replacement takes its share: each connection goes to the next receiver, refusals name their pid.
    const hooks = Array.from({ length: 10 }, () => ourWebhook(base));
    assert.deepEqual(await Promise.all(hooks.map((h) => post(h.url, h.headers, h.body))), hooks.map(() => 200));
    for (const h of [...during, ...hooks]) assert.ok(await t.ctx.queues.results.getJob(jobIds.result(h.requestId, 'OK')), `${h.requestId} recorded`);
    await until(
      async () => {
        await post(base, { 'content-type': 'application/json' }, '{}');
        return cli.output().includes(`"pid":${replacement},`);
      },
      'a refusal logged by the replacement',
      20_000,
    ).catch((err: Error) => assert.fail(`${err.message} (pid ${replacement}; receivers ${childrenOf(cli.child.pid!).join(', ')}):\n${cli.output().slice(-1500)}`));

    // Dies again: replaced again (not only once).
    process.kill(replacement, 'SIGKILL');
    await until(
      async () => childrenOf(cli.child.pid!).some((p) => p !== victim && p !== replacement && p !== Number(pidB)) && (await gauge()) === 2,
      'a second replacement',
      60_000,
    ).catch(async (err: Error) => assert.fail(`${err.message} (receivers ${childrenOf(cli.child.pid!).join(', ')}, gauge ${await gauge()}):\n${cli.output().slice(-1500)}`));
    const pids = childrenOf(cli.child.pid!);
    assert.equal(pids.length, 2, `two receivers, no more (${pids.join(', ')})`);

    assert.equal(await cli.stop('SIGTERM'), 0, cli.output());
    for (const pid of pids) assert.equal(alive(pid), false, `receiver ${pid} is gone`);
    assert.equal(count(cli.output(), /starting another/g), 2, 'only the two killed receivers were replaced, none stopped by SIGTERM');
  } finally {
    await cli.stop('SIGKILL');
  }
});

test('WEBHOOK_PROCESSES=2 on a port already in use: one clear error, nothing forked', { timeout: 60_000 }, async () => {
  const taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, '0.0.0.0', resolve));
  const port = (taken.address() as { port: number }).port;
  try {
    const r = await runCli(['webhook'], { ...t.local.env, WEBHOOK_PROCESSES: '2', WEBHOOK_PORT: String(port), ADMIN_PORT: '0', LOG_LEVEL: 'warn' });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, new RegExp(`port ${port} on 0\\.0\\.0\\.0 \\(WEBHOOK_PORT\\) is already in use`));
    assert.doesNotMatch(r.stderr + r.stdout, /receiver process/);
  } finally {
    await new Promise<void>((resolve) => taken.close(() => resolve()));
  }
});
