// Say it once: what follows from an outage is not a line of its own. A BullMQ worker's `error` event
// for a job lock lost during an outage (or just after it) belongs to that outage's one warning; the
// same error outside an outage is said at most once per errorRepeatMs, however its ids differ.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DestinationStream } from 'pino';
import { eventually } from './helpers/eventually.ts';
import { startTestStack } from './helpers/stack.ts';

interface LogLine {
  level: number;
  msg: string;
  err?: string;
  repeated?: number;
}

function captureLog(): DestinationStream & { lines: LogLine[] } {
  const lines: LogLine[] = [];
  return {
    lines,
    write(s: string) {
      for (const l of s.split('\n').filter(Boolean)) lines.push(JSON.parse(l) as LogLine);
    },
  };
}

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
