// Every outcome of a completion notice, against a receiver of the test's own on loopback that answers
// each run's notice its own way: 2xx delivers it, a redirect is not followed and is no delivery, a 4xx
// is no delivery, a 5xx and no answer at all are tried again, and a run whose finalize died after
// ending the run but before queueing the notice still gets it from the finalize that runs again.
// Sending runs in the notifier BullMQ worker (startNotifier), with short backoff and timeout.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { PassThrough } from 'node:stream';
import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { Queue, type Job, type Worker } from 'bullmq';
import { loadConfig } from '../src/core/config.ts';
import { createLogger } from '../src/core/logger.ts';
import { createPortraitBatch } from '../src/index.ts';
import { enqueueRunNotice, NOTIFY_QUEUE, sendNotice, SIGNATURE_HEADER, startNotifier, verifyNotice, type NoticeJob } from '../src/outputs/notify.ts';
import { writeRunReport } from '../src/worker/finalize.ts';
import { faceDataUri } from './helpers/faces.ts';
import { TEST_POLICY, startTestStack, type TestStack } from './helpers/stack.ts';
import { until } from './security/helpers.ts';

const SECRET = 'test-notify-secret-outcomes-0123456789';
const TRIES = 3;
// Long enough for a loaded machine's first request; an unanswered try costs this much.
const TIMEOUT_MS = 2000;

interface Delivery {
  path: string;
  runId: string;
  headers: IncomingHttpHeaders;
  body: string;
}

/** How the receiver answers the notice of a run, try by try (the last answer repeats). */
type Answer = number | 'hang';
const plans = new Map<string, Answer[]>();
const deliveries: Delivery[] = [];
const held: ServerResponse[] = [];
let landings = 0;

let receiver: Server;
let t: TestStack;
let notifier: Worker<NoticeJob>;
let queue: Queue<NoticeJob>;
/** What the notifier logged (one JSON object a line). */
let logged = '';

before(async () => {
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      if (req.url === '/landing') {
        landings++;
        res.writeHead(204).end();
        return;
      }
      const body = Buffer.concat(chunks).toString('utf8');
      const runId = (JSON.parse(body) as { runId: string }).runId;
      const tries = deliveries.filter((d) => d.runId === runId).length;
      deliveries.push({ path: req.url ?? '', runId, headers: req.headers, body });
      const plan = plans.get(runId) ?? [204];
      const answer = plan[Math.min(tries, plan.length - 1)]!;
      if (answer === 'hang') return void held.push(res);
      if (answer >= 300 && answer < 400) res.writeHead(answer, { location: '/landing' }).end();
      else res.writeHead(answer).end(answer >= 400 ? 'no' : '');
    });
  });
  receiver.listen(0, '127.0.0.1');
  await once(receiver, 'listening');
  t = await startTestStack({
    workers: false,
    env: { NOTIFY_URL: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hooks/runs?token=receiver-secret-7`, NOTIFY_SECRET: SECRET },
    policy: { notify: { tries: TRIES, backoff: { baseMs: 50, capMs: 100, jitter: 0 }, timeoutMs: TIMEOUT_MS } },
  });
  const out = new PassThrough();
  out.on('data', (d: Buffer) => (logged += d.toString()));
  notifier = startNotifier({ ...t.ctx, logger: createLogger('notify-test', 'info', out) });
  await notifier.waitUntilReady();
  queue = new Queue<NoticeJob>(NOTIFY_QUEUE, { connection: t.ctx.redis });
});

after(async () => {
  await notifier.close();
  await queue.close();
  await t.stop();
  for (const r of held) r.destroy();
  receiver.closeAllConnections();
  await new Promise((r) => receiver.close(r));
});

const of = (runId: string) => deliveries.filter((d) => d.runId === runId);

/** Queues a notice as a finalize does, and waits until its job is completed or given up. */
async function notice(runId: string, answers: Answer[]): Promise<{ state: string; job: Job<NoticeJob> }> {
  plans.set(runId, answers);
  await enqueueRunNotice(t.ctx, { runId });
  let state = '';
  await until(
    async () => {
      state = await queue.getJobState(`n~${runId}`);
      return state === 'completed' || state === 'failed';
    },
    `the notice of ${runId} to be delivered or given up`,
    30_000,
  );
  return { state, job: (await queue.getJob(`n~${runId}`))! };
}

const verifies = (d: Delivery) => verifyNotice(SECRET, d.headers[SIGNATURE_HEADER] as string | undefined, d.body).ok;
/** The body without the envelope fields every notice carries (event, deliveryId): the run summary. */
const summaryIn = (d: Delivery) => {
  const { event, deliveryId, ...summary } = JSON.parse(d.body) as Record<string, unknown>;
  assert.equal(event, 'run.ended');
  assert.equal(deliveryId, d.headers['x-portrait-batch-delivery']);
  return summary;
};

test('2xx: delivered at the first try, signed, with the run as delivery id', async () => {
  for (const [runId, status] of [
    ['ok-200', 200],
    ['ok-204', 204],
    ['ok-299', 299],
  ] as const) {
    const { state, job } = await notice(runId, [status]);
    assert.equal(state, 'completed', runId);
    assert.equal(job.returnvalue, status, 'the status it was delivered with');
    const got = of(runId);
    assert.equal(got.length, 1, `${runId}: one delivery`);
    assert.equal(got[0]!.path, '/hooks/runs?token=receiver-secret-7');
    assert.ok(verifies(got[0]!), 'signed with NOTIFY_SECRET');
    assert.equal(got[0]!.headers['x-portrait-batch-delivery'], runId);
    assert.equal(got[0]!.headers['x-portrait-batch-event'], 'run.ended');
    assert.equal(got[0]!.headers['x-portrait-batch-attempt'], '1');
    assert.equal(got[0]!.headers['content-type'], 'application/json');
    assert.equal(got[0]!.headers['user-agent'], 'portrait-batch');
    assert.deepEqual(summaryIn(got[0]!), { runId });
  }
});

test('3xx: the redirect is not followed, and it is no delivery (tried again, then given up)', async () => {
  for (const status of [301, 302, 307, 308]) {
    const runId = `redirect-${status}`;
    const { state, job } = await notice(runId, [status]);
    assert.equal(state, 'failed', `${status}: given up`);
    assert.equal(of(runId).length, TRIES, `${status}: tried ${TRIES} times`);
    assert.match(job.failedReason, /redirect|fetch failed/i);
  }
  assert.equal(landings, 0, 'the redirect target was never called');
});

test('4xx: not delivered (tried again, then given up, the status in the reason)', async () => {
  for (const status of [400, 404, 410, 422]) {
    const runId = `refused-${status}`;
    const { state, job } = await notice(runId, [status]);
    assert.equal(state, 'failed', `${status}`);
    assert.equal(of(runId).length, TRIES);
    assert.equal(job.failedReason, `the notice receiver answered ${status}`);
    assert.equal(job.attemptsMade, TRIES);
  }
});

test('5xx: tried again until accepted; each try says which it is', async () => {
  const { state } = await notice('flaky-5xx', [500, 503, 204]);
  assert.equal(state, 'completed');
  const got = of('flaky-5xx');
  assert.deepEqual(got.map((d) => d.headers['x-portrait-batch-attempt']), ['1', '2', '3']);
  assert.ok(got.every(verifies));
  assert.equal(new Set(got.map((d) => d.body)).size, 1, 'the same body every time');

  const never = await notice('down-5xx', [502]);
  assert.equal(never.state, 'failed');
  assert.equal(never.job.failedReason, 'the notice receiver answered 502');
  assert.equal(of('down-5xx').length, TRIES, 'given up after its tries');
});

test('no answer: the try is abandoned after its timeout and tried again', async () => {
  const { state, job } = await notice('silent', ['hang', 204]);
  assert.equal(state, 'completed');
  assert.deepEqual(of('silent').map((d) => d.headers['x-portrait-batch-attempt']), ['1', '2'], 'the unanswered try, then the delivery');
  assert.equal(job.returnvalue, 204);
  const never = await notice('silent-forever', ['hang']);
  assert.equal(never.state, 'failed');
  assert.match(never.job.failedReason, /timeout|aborted/i);
  assert.equal(of('silent-forever').length, TRIES);
});

test('a notice is queued once per run: a repeated finalize sends nothing more', async () => {
  await notice('once', [204]);
  await enqueueRunNotice(t.ctx, { runId: 'once' });
  assert.equal(await queue.getJobState('n~once'), 'completed');
  assert.equal((await queue.getJobCounts('waiting', 'delayed', 'active')).waiting, 0);
  assert.equal(of('once').length, 1);
});

test('without NOTIFY_URL nothing is queued or sent', async () => {
  const ctx = { ...t.ctx, cfg: { ...t.ctx.cfg, NOTIFY_URL: undefined } };
  await enqueueRunNotice(ctx, { runId: 'unset' });
  assert.equal(await queue.getJob('n~unset'), undefined);
  assert.equal(await sendNotice(ctx, { data: { runId: 'unset', summary: { runId: 'unset' } }, attemptsMade: 0 } as unknown as Job<NoticeJob>), 0);
  const noSecret = { ...t.ctx, cfg: { ...t.ctx.cfg, NOTIFY_SECRET: undefined } };
  assert.equal(await sendNotice(noSecret, { data: { runId: 'unset', summary: { runId: 'unset' } }, attemptsMade: 0 } as unknown as Job<NoticeJob>), 0, 'nor without a secret to sign with');
  assert.equal(of('unset').length, 0);
});

test('a finalize that ended the run and died before queueing the notice: the finalize that runs again queues it', async () => {
  // Workers that end runs but queue no notice: the state a finalize leaves when it dies right after
  // marking its run finished (the notice is queued just after that).
  const env = { ...t.local.env };
  delete env.NOTIFY_URL;
  const crashing = createPortraitBatch(loadConfig(env), { name: 'no-notice', policy: TEST_POLICY });
  const runId = 'crashed-finalize';
  try {
    const path = await t.manifest('crash.csv', `id,face_url\nr0,"${await faceDataUri(7)}"\n`);
    await crashing.startRun(path, { runId });
    await crashing.startWorkers();
    assert.equal((await crashing.waitForRun(runId, { timeoutMs: 60_000 })).state, 'finished');
  } finally {
    await crashing.close();
  }
  assert.equal(await queue.getJob(`n~${runId}`), undefined, 'no notice queued yet');
  const summary = await writeRunReport(t.ctx, runId);
  await until(async () => (await queue.getJobState(`n~${runId}`)) === 'completed', 'the notice to be delivered', 30_000);
  const got = of(runId);
  assert.equal(got.length, 1);
  assert.deepEqual(summaryIn(got[0]!), summary, 'the run summary');
  assert.deepEqual(summaryIn(got[0]!), await t.ctx.storage.getJson(`runs/${runId}/summary.json`), 'as in summary.json');
  assert.ok(verifies(got[0]!));
});

test('the notifier logs each outcome once, naming the receiver by its origin only', async () => {
  await notice('logged-ok', [204]);
  await notice('logged-retry', [503, 204]);
  await notice('logged-never', [500]);
  const lines = logged
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { level: number; runId: string; to: string; msg: string })
    .filter((l) => l.runId?.startsWith('logged-'));
  const origin = new URL(t.ctx.cfg.NOTIFY_URL!).origin;
  assert.deepEqual(
    lines.map((l) => [l.runId, l.level, l.msg]),
    [
      ['logged-ok', 30, 'run notice delivered'],
      ['logged-retry', 40, 'run notice not delivered yet: will retry'],
      ['logged-retry', 30, 'run notice delivered'],
      ...Array.from({ length: TRIES - 1 }, () => ['logged-never', 40, 'run notice not delivered yet: will retry']),
      ['logged-never', 50, 'run notice not delivered: gave up'],
    ],
  );
  assert.ok(lines.every((l) => l.to === origin), 'the origin only');
  assert.ok(!logged.includes('receiver-secret-7'), 'never the query of NOTIFY_URL');
});
