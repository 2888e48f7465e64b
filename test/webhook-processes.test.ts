// The receiver's record path at volume: webhooks that arrive together share one Redis round trip, each
// still answered 200 only once its job is in Redis, and a round trip Redis refuses answers 503 to every
// webhook in it (fal re-delivers, recorded once). WEBHOOK_PROCESSES=2: two receiver processes share the
// port, record every webhook, the primary's /metrics sum both, and SIGTERM stops them all.
// Real redis-server, s3rver, the emulator's JWKS and signing key, the real CLI.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, describe, test } from 'node:test';
import { randomUUID } from 'node:crypto';
import { jobIds } from '../src/core/queues.ts';
import { mintWebhookToken, TOKEN_PARAM } from '../src/core/webhookToken.ts';
import { createSigningKey } from '../src/emulator/keys.ts';
import { startCli } from './helpers/processes.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';
import { falBody, signedHeaders, until } from './security/helpers.ts';

const key = createSigningKey();
const RUN = 'run-volume';
let t: TestStack;
let row = 0;

/** A signed OK webhook for a new request of ours (its URL carries a valid token). */
function ourWebhook(base: string) {
  const requestId = randomUUID();
  const target = { runId: RUN, key: `r${row++}`, attempt: 1 };
  const query = new URLSearchParams({ run: target.runId, row: target.key, attempt: '1', [TOKEN_PARAM]: mintWebhookToken(t.ctx.cfg.WEBHOOK_SECRET!, target) });
  const body = falBody(requestId, 'OK', { images: [{ url: `https://fal.media/files/${requestId}.png`, content_type: 'image/png', width: 8, height: 8 }], seed: 1 });
  return { requestId, url: `${base}?${query}`, headers: signedHeaders(key, { requestId, body }), body };
}

/** POSTs on a connection of its own (so a cluster's primary hands each to the next receiver). */
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

const recorded = async (requestId: string) => Boolean(await t.ctx.queues.results.getJob(jobIds.result(requestId, 'OK')));

before(async () => {
  t = await startTestStack({ workers: false, emulator: { signingKey: key } });
});
after(() => t.stop());

describe('recording webhooks that arrive together', () => {
  test('32 at once: each 200 comes after its job is in Redis, and they share fewer round trips than webhooks', async () => {
    const counters = t.webhook!.counters;
    const before = { recorded: counters.recorded, batches: counters.batches };
    const hooks = Array.from({ length: 32 }, () => ourWebhook(t.ctx.cfg.webhookUrl));
    await Promise.all(
      hooks.map(async (h) => {
        assert.equal(await post(h.url, h.headers, h.body), 200);
        assert.ok(await recorded(h.requestId), `the job of ${h.requestId} is in Redis when its 200 arrives`);
      }),
    );
    assert.equal(counters.recorded - before.recorded, 32);
    const batches = counters.batches - before.batches;
    assert.ok(batches >= 1 && batches < 32, `32 webhooks took ${batches} Redis round trips`);
    const metrics = await t.ctx.metrics.registry.getSingleMetricAsString('portrait_batch_webhook_record_batches_total');
    assert.match(metrics, new RegExp(`portrait_batch_webhook_record_batches_total ${counters.batches}\\b`));
  });

  test('a round trip Redis refuses answers 503 to every webhook in it; the re-deliveries are recorded once each', async () => {
    const hooks = Array.from({ length: 8 }, () => ourWebhook(t.ctx.cfg.webhookUrl));
    const counters = t.webhook!.counters;
    const before = counters.recorded;
    // Redis refuses every write (out of memory, noeviction), as a full Redis would.
    await t.ctx.redis.config('SET', 'maxmemory-policy', 'noeviction');
    await t.ctx.redis.config('SET', 'maxmemory', '1');
    try {
      const statuses = await Promise.all(hooks.map((h) => post(h.url, h.headers, h.body)));
      assert.deepEqual(statuses, hooks.map(() => 503));
    } finally {
      await t.ctx.redis.config('SET', 'maxmemory', '0');
    }
    assert.equal(counters.recorded, before, 'none counted as recorded');
    for (const h of hooks) assert.equal(await recorded(h.requestId), false);
    // fal re-delivers each (twice for the first): recorded, once.
    const again = await Promise.all([...hooks, hooks[0]!].map((h) => post(h.url, h.headers, h.body)));
    assert.deepEqual(again, [...hooks, hooks[0]].map(() => 200));
    for (const h of hooks) assert.ok(await recorded(h.requestId));
    const counts = await t.ctx.queues.results.getJobCounts();
    assert.equal(Object.values(counts).reduce((a, b) => a + b, 0), 32 + 8, 'one job per request');
  });
});

test('WEBHOOK_PROCESSES=2: two receivers share the port and record every webhook; /metrics sums both; SIGTERM stops them all', { timeout: 120_000 }, async () => {
  const cli = startCli(['webhook'], { ...t.local.env, WEBHOOK_PROCESSES: '2', WEBHOOK_PORT: '0', ADMIN_PORT: '0', LOG_LEVEL: 'warn' });
  try {
    await cli.waitFor(/listening on :\d+ in 2 processes \(pids \d+, \d+\); admin on http:\/\/\S+/, 'the receivers listening');
    const [, port, pidA, pidB, admin] = /listening on :(\d+) in 2 processes \(pids (\d+), (\d+)\); admin on (http:\/\/\S+)/.exec(cli.output())!;
    const pids = [Number(pidA), Number(pidB)];
    const base = `http://127.0.0.1:${port}/fal/webhook`;

    const hooks = Array.from({ length: 20 }, () => ourWebhook(base));
    const statuses = await Promise.all(hooks.map((h) => post(h.url, h.headers, h.body)));
    assert.deepEqual(statuses, hooks.map(() => 200));
    for (const h of hooks) assert.ok(await recorded(h.requestId), `${h.requestId} recorded`);

    // Each connection goes to the next receiver: refusals (logged with the receiver's pid) show both at work.
    for (let i = 0; i < 4; i++) assert.equal(await post(base, { 'content-type': 'application/json' }, '{}'), 401);
    await until(() => pids.every((pid) => cli.output().includes(`"pid":${pid},`)), 'a refusal logged by each receiver');

    const metric = async (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(await (await fetch(`${admin}/metrics`)).text())?.[1]);
    await until(
      async () => (await metric('portrait_batch_webhooks_verified_total')) === 20 && (await metric('portrait_batch_webhooks_received_total')) === 24,
      "the primary's /metrics summing both receivers' reports",
    );
    assert.equal(await metric('portrait_batch_webhook_processes'), 2);

    assert.equal(await cli.stop('SIGTERM'), 0, cli.output());
    for (const pid of pids) assert.throws(() => process.kill(pid, 0), { code: 'ESRCH' }, `receiver ${pid} is gone`);
  } finally {
    await cli.stop('SIGKILL');
  }
});

test('webhooks Redis refuses while it is full are one outage warning and one recovery line, not a line per webhook', async () => {
  const lines: { level: number; msg: string }[] = [];
  const log = { write: (s: string) => void lines.push(...s.split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number; msg: string })) };
  const own = await startTestStack({ workers: false, emulator: { signingKey: key }, env: { LOG_LEVEL: 'info' }, log });
  const saved = t;
  t = own; // ourWebhook mints tokens with this stack's secret
  try {
    const hooks = Array.from({ length: 8 }, () => ourWebhook(own.ctx.cfg.webhookUrl));
    await own.ctx.redis.config('SET', 'maxmemory-policy', 'noeviction');
    await own.ctx.redis.config('SET', 'maxmemory', '1');
    try {
      for (const h of hooks) assert.equal(await post(h.url, h.headers, h.body), 503);
    } finally {
      await own.ctx.redis.config('SET', 'maxmemory', '0');
    }
    await until(() => lines.some((l) => /^Redis reachable again/.test(l.msg)), 'the recovery line');
    const warned = lines.filter((l) => l.level >= 40).map((l) => l.msg);
    assert.equal(warned.length, 2, `two lines in all:\n${warned.join('\n')}`);
    assert.match(warned[0]!, /^Redis unreachable \(REDIS_URL /);
    assert.match(warned[1]!, /^Redis reachable again after \d+s/);
  } finally {
    t = saved;
    await own.stop();
  }
});
