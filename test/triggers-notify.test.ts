// The completion notice: when a run ends its summary is POSTed to NOTIFY_URL, signed with HMAC-SHA256
// under NOTIFY_SECRET, and retried with backoff when the receiver fails; a receiver that never accepts
// it never changes the run. The receiver is a small HTTP server of the test's own on loopback.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { Queue } from 'bullmq';
import { produceRun } from '../src/producer/produce.ts';
import { NOTIFY_QUEUE } from '../src/triggers/notify.ts';
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
    const expected = `sha256=${createHmac('sha256', SECRET).update(d.body).digest('hex')}`;
    assert.equal(d.headers['x-portrait-batch-signature'], expected, 'HMAC-SHA256 of the raw body');
    assert.equal(d.headers['content-type'], 'application/json');
  }
  assert.deepEqual(got.map((d) => d.headers['x-portrait-batch-attempt']), ['1', '2']);
  const summary = JSON.parse(got[1]!.body) as { runId: string; state: string; completed: number; total: number };
  assert.deepEqual([summary.runId, summary.state, summary.completed, summary.total], ['notified', 'finished', 2, 2]);
  const stored = await t.ctx.storage.getJson<Record<string, unknown>>(`runs/notified/summary.json`);
  assert.deepEqual(JSON.parse(got[1]!.body), stored, 'the notice is the run summary');
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
