// The completion notice: when a run ends its summary is POSTed to NOTIFY_URL, signed with HMAC-SHA256
// under NOTIFY_SECRET over `<t>.<body>` (Stripe's scheme: a stale or altered copy is refused), and retried with backoff when the receiver fails; a receiver that never accepts
// it never changes the run. The receiver is a small HTTP server of the test's own on loopback.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { produceRun } from '../src/producer/produce.ts';
import { NOTIFY_QUEUE, verifyNotice } from '../src/outputs/notify.ts';
import { faceDataUri } from './helpers/faces.ts';
import { startTestStack, type TestStack } from './helpers/stack.ts';
import { until } from './security/helpers.ts';

const SECRET = 'test-notify-secret-0123456789abcdef';
const TRIES = 3;

interface Delivery {
  headers: IncomingHttpHeaders;
  body: string;
  answered: number;
}

let t: TestStack;
let receiver: Server;
const deliveries: Delivery[] = [];
/** Failures still to give per run id before accepting (default: the first attempt fails). */
const failuresLeft = new Map<string, number>();

before(async () => {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      const runId = (JSON.parse(body) as { runId: string }).runId;
      const left = failuresLeft.get(runId) ?? 1;
      const answered = left > 0 ? 503 : 204;
      failuresLeft.set(runId, left - 1);
      deliveries.push({ headers: req.headers, body, answered });
      res.writeHead(answered).end();
    });
  });
  receiver.listen(0, '127.0.0.1');
  await once(receiver, 'listening');
  t = await startTestStack({
    env: { NOTIFY_URL: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/runs?team=a`, NOTIFY_SECRET: SECRET },
    policy: { notify: { tries: TRIES, backoff: { baseMs: 50, capMs: 200 } } },
  });
});

after(async () => {
  await t.stop();
  receiver.closeAllConnections();
  await new Promise((r) => receiver.close(r));
});

async function runOf(runId: string): Promise<void> {
  const path = await t.manifest(`${runId}.csv`, `id,face_url\nr0,"${await faceDataUri(3)}"\nr1,"${await faceDataUri(4)}"\n`);
  await produceRun(t.ctx, path, { runId });
  await t.pb.waitForRun(runId, { timeoutMs: 60_000 });
}

const of = (runId: string) => deliveries.filter((d) => (JSON.parse(d.body) as { runId: string }).runId === runId);

test('the run summary arrives signed with NOTIFY_SECRET when the run ends, and a failed delivery is retried', async () => {
  await runOf('notified');
  await until(() => of('notified').some((d) => d.answered === 204), 'the notice to be accepted', 30_000);

  const got = of('notified');
  assert.deepEqual(got.map((d) => d.answered), [503, 204], 'refused once, then delivered once');
  for (const d of got) {
    const header = String(d.headers['x-portrait-batch-signature']);
    const m = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header);
    assert.ok(m, `t=<unix seconds>,v1=<hex>: ${header}`);
    assert.ok(Math.abs(Number(m[1]) - Date.now() / 1000) < 120, 't is the time of sending');
    assert.equal(m[2], createHmac('sha256', SECRET).update(`${m[1]}.${d.body}`).digest('hex'), 'v1 is HMAC-SHA256 of `${t}.${body}`');
    assert.deepEqual(verifyNotice(SECRET, header, d.body), { ok: true, timestamp: Number(m[1]) });
    assert.equal(d.headers['content-type'], 'application/json');
  }
  assert.deepEqual(got.map((d) => d.headers['x-portrait-batch-attempt']), ['1', '2']);
  const summary = JSON.parse(got[1]!.body) as { runId: string; state: string; completed: number; total: number };
  assert.deepEqual([summary.runId, summary.state, summary.completed, summary.total], ['notified', 'finished', 2, 2]);
  const stored = await t.ctx.storage.getJson<Record<string, unknown>>(`runs/notified/summary.json`);
  const { event, deliveryId, ...rest } = JSON.parse(got[1]!.body) as Record<string, unknown>;
  assert.deepEqual(rest, stored, 'the notice is the run summary');
  assert.deepEqual([event, deliveryId], ['run.ended', 'notified'], 'with the event and the delivery id, inside what is signed');
  assert.equal(got[1]!.headers['x-portrait-batch-delivery'], 'notified');
});

test('a receiver refuses a replayed (stale) notice, an altered body and another delivery id under the same signature', async () => {
  await until(() => of('notified').some((d) => d.answered === 204), "the first test's notice", 30_000);
  const d = of('notified').find((x) => x.answered === 204)!;
  const header = String(d.headers['x-portrait-batch-signature']);
  const signedAt = Number(/^t=(\d+)/.exec(header)![1]);
  assert.equal(verifyNotice(SECRET, header, d.body, { now: (signedAt + 299) * 1000 }).ok, true, 'within the 300 s tolerance');
  const stale = verifyNotice(SECRET, header, d.body, { now: (signedAt + 301) * 1000 });
  assert.equal(stale.ok, false, 'the same bytes 301 s later are a replay');
  assert.match((stale as { reason: string }).reason, /301 s ago, outside the 300 s tolerance/);
  const otherDelivery = d.body.replace('"deliveryId":"notified"', '"deliveryId":"another"');
  assert.notEqual(otherDelivery, d.body);
  assert.equal(verifyNotice(SECRET, header, otherDelivery).ok, false, 'the delivery id is signed');
  assert.equal(verifyNotice(SECRET, header.replace(/^t=\d+/, `t=${signedAt + 1}`), d.body).ok, false, 'the time is signed');
  assert.equal(verifyNotice('another-secret-0123456789', header, d.body).ok, false, 'another secret');
  assert.equal(verifyNotice(SECRET, `sha256=${createHmac('sha256', SECRET).update(d.body).digest('hex')}`, d.body).ok, false, 'the old unsigned-time scheme is not accepted');
});

test('a notice that is never accepted is given up after its tries and never changes the run', async () => {
  failuresLeft.set('unheard', Infinity);
  await runOf('unheard');
  const queue = new Queue(NOTIFY_QUEUE, { connection: t.ctx.redis });
  try {
    await until(async () => (await queue.getJob('n~unheard'))?.failedReason !== undefined && (await queue.getJobState('n~unheard')) === 'failed', 'the notice to be given up', 30_000);
  } finally {
    await queue.close();
  }
  assert.equal(of('unheard').length, TRIES, 'tried NOTIFY tries times');
  const status = await t.pb.status('unheard');
  assert.deepEqual([status?.state, status?.completed], ['finished', 2], 'the run is finished all the same');
});
