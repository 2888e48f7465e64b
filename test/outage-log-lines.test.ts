// Say it once: what follows from an outage is not a line of its own. A BullMQ worker's `error` event
// for a job lock lost during an outage (or just after it) belongs to that outage's one warning; the
// same error outside an outage is said at most once per errorRepeatMs, however its ids differ. A
// Redis outage, which every process sees, is said by the workers; a receiver says it only if it lasts.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { loadConfig } from '../src/core/config.ts';
import { createContext } from '../src/core/context.ts';
import { startRedisServer } from '../src/local/redisServer.ts';
import { createMetrics } from '../src/ops/metrics.ts';
import { captureLog } from './helpers/captureLog.ts';
import { eventually } from './helpers/eventually.ts';
import { startTestStack, TEST_DEFAULTS, TEST_POLICY } from './helpers/stack.ts';

const lockLost = (n: number) => [new Error(`could not renew lock for job s~run-${n}~c${n}~0`), new Error(`Missing lock for job r~${n}aa-bb~OK. moveToDelayed`)];

test('job locks lost during an outage and just after it add no line; outside an outage one line per kind of error, not one per job', async () => {
  const log = captureLog();
  const t = await startTestStack({ env: { LOG_LEVEL: 'info' }, log });
  try {
    const submit = t.workers!.workers.find((w) => w.name === 'pb-submit')!;
    const workerErrors = () => log.lines.filter((l) => l.msg === 'worker error');

    // No outage: ten lost locks of different jobs are one line of each kind.
    for (let i = 0; i < 10; i++) for (const err of lockLost(i)) submit.emit('error', err);
    assert.equal(workerErrors().length, 2, `one line per kind:\n${workerErrors().map((l) => l.err).join('\n')}`);

    // fal down (and back: its probe finds the emulator at once): the lost locks belong to that outage.
    t.ctx.dependencies.down('fal', new Error('fal unreachable (ECONNREFUSED)'));
    for (let i = 10; i < 20; i++) for (const err of lockLost(i)) submit.emit('error', err);
    // Its recovery line, not only isDown: the line follows the shared record's removal.
    await eventually(() => log.lines.some((l) => /^fal reachable again/.test(l.msg)), 'fal seen back');
    for (let i = 20; i < 30; i++) for (const err of lockLost(i)) submit.emit('error', err);
    assert.equal(workerErrors().length, 2, 'no line for a lock lost during the outage or right after it');
    assert.equal(log.lines.filter((l) => l.level >= 40 && /^fal (unreachable|reachable again)/.test(l.msg)).length, 2, 'the outage: one warning, one recovery line');
  } finally {
    await t.stop();
  }
});

test('a Redis outage seen by a worker and a receiver is one warning and one recovery line: the worker says them; the receiver at info, and warns only when the outage lasts', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pb-redis-voice-'));
  let redis = await startRedisServer({ dir, persistent: false });
  const env = { ...TEST_DEFAULTS, REDIS_URL: redis.url, LOG_LEVEL: 'info', WEBHOOK_SECRET: 'x'.repeat(32) };
  const open = (name: string, log: ReturnType<typeof captureLog>) => createContext(loadConfig(env), name, TEST_POLICY, { log, metrics: () => createMetrics() });
  const logs = { worker: captureLog(), receiver: captureLog(), receiverAlone: captureLog() };
  const worker = open('worker', logs.worker);
  const receiver = open('webhook', logs.receiver);
  // A receiver with no worker beside it, whose outage lasts past its wait: it warns, then says the recovery.
  const receiverAlone = open('webhook', logs.receiverAlone);
  receiver.dependencies.sayRedisOutages({ afterMs: 60_000, affects: 'webhooks are refused (fal delivers them again)' });
  receiverAlone.dependencies.sayRedisOutages({ afterMs: 300, affects: 'webhooks are refused (fal delivers them again)' });
  const all = [worker, receiver, receiverAlone];
  try {
    await eventually(() => all.every((c) => c.redis.status === 'ready'), 'every process connected');
    await redis.stop();
    await eventually(() => all.every((c) => c.dependencies.isDown('redis')), 'every process saw Redis go');
    await eventually(() => logs.receiverAlone.lines.some((l) => l.level === 40 && /^Redis unreachable for/.test(l.msg)), 'the lone receiver warned once it lasted');
    redis = await startRedisServer({ dir, persistent: false, port: redis.port });
    await eventually(() => all.every((c) => !c.dependencies.isDown('redis')), 'every process saw Redis back', 30_000);
    const warned = (log: ReturnType<typeof captureLog>, re: RegExp) => log.lines.filter((l) => l.level >= 40 && re.test(l.msg)).length;
    assert.deepEqual([warned(logs.worker, /^Redis unreachable/), warned(logs.worker, /^Redis reachable again/)], [1, 1], 'the worker: one warning, one recovery');
    assert.deepEqual([warned(logs.receiver, /^Redis/), logs.receiver.lines.filter((l) => /^Redis (unreachable|reachable again)/.test(l.msg)).length], [0, 2], 'the receiver: both at info');
    assert.match(logs.receiver.lines.find((l) => /^Redis unreachable/.test(l.msg))!.msg, /webhooks are refused/);
    assert.deepEqual([warned(logs.receiverAlone, /^Redis unreachable/), warned(logs.receiverAlone, /^Redis reachable again/)], [1, 1], 'the lone receiver: one warning once it lasted, one recovery');
  } finally {
    for (const c of all) await c.close();
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test('a stalled Redis (SIGSTOP: connected, answering nothing) is noticed by its PING deadline: one warning, one recovery line once it answers again', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pb-redis-stall-'));
  const redis = await startRedisServer({ dir, persistent: false });
  const log = captureLog();
  const policy = { ...TEST_POLICY, dependencies: { ...TEST_POLICY.dependencies, redisStall: { pingEveryMs: 100, stalledAfterMs: 500 } } };
  const ctx = createContext(loadConfig({ ...TEST_DEFAULTS, REDIS_URL: redis.url, LOG_LEVEL: 'info' }), 'worker', policy, { log, metrics: () => createMetrics() });
  const pid = redis.process.pid!;
  try {
    await eventually(() => ctx.redis.status === 'ready', 'connected');
    process.kill(pid, 'SIGSTOP');
    try {
      await eventually(() => ctx.dependencies.isDown('redis'), 'the stall noticed', 10_000);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    await eventually(() => !ctx.dependencies.isDown('redis'), 'Redis seen back', 10_000);
    const warned = (re: RegExp) => log.lines.filter((l) => l.level >= 40 && re.test(l.msg));
    assert.equal(warned(/^Redis unreachable/).length, 1, 'one warning');
    assert.match(String(warned(/^Redis unreachable/)[0]!.reason), /no answer to PING within 500 ms/);
    assert.equal(warned(/^Redis reachable again/).length, 1, 'one recovery line');
  } finally {
    await ctx.close();
    await redis.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
