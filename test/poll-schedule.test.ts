// Poll mode's schedule at its edges (nextPollDelay, pure): fal unreachable backs off doubling and
// stops doubling; the gaps stay within their bounds whatever the estimate; a request past its expected
// end is looked at again soon; the margin past the expected end has a floor and a ceiling; a running
// request never seen starting is timed from its submission less the waves before it. (The common
// cases, and poll mode end to end: poll-mode.test.ts.)
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { loadConfig } from '../src/core/config.ts';
import { buildPolicy } from '../src/core/policy.ts';
import { nextPollDelay } from '../src/worker/poll.ts';

const P = buildPolicy(loadConfig({})).poll;

test('the default schedule policy these cases are written for', () => {
  assert.deepEqual(
    [P.coldFirstMs, P.minGapMs, P.overdueGapMaxMs, P.maxGapMs, P.unreachableBaseMs],
    [1000, 250, 2000, 60_000, 1000],
  );
});

test('fal unreachable: 1 s, doubling with each look in a row, at most 2^6 times, within the longest gap', () => {
  const at = (polls: number) => nextPollDelay(P, { runMs: 5000, samples: 3 }, { status: 'UNREACHABLE', sinceSubmitMs: 0, polls }, 2);
  assert.deepEqual([0, 1, 2, 5, 6, 7, 20].map(at), [1000, 2000, 4000, 32_000, 60_000, 60_000, 60_000]);
  const small = { ...P, unreachableBaseMs: 100, maxGapMs: 1_000_000 };
  assert.deepEqual([0, 6, 7, 50].map((polls) => nextPollDelay(small, { samples: 0 }, { status: 'UNREACHABLE', sinceSubmitMs: 0, polls }, 2)), [250, 6400, 6400, 6400]);
});

test('nothing learned yet: at least 1 s, then the time since submit, never past the longest gap', () => {
  const cold = (sinceSubmitMs: number) => nextPollDelay(P, { samples: 0 }, { status: 'IN_QUEUE', sinceSubmitMs, polls: 0 }, 2);
  assert.deepEqual([0, 999, 1000, 1500, 59_999, 60_000, 500_000].map(cold), [1000, 1000, 1000, 1500, 59_999, 60_000, 60_000]);
  assert.equal(nextPollDelay({ ...P, coldFirstMs: 10 }, { samples: 0 }, { status: 'IN_QUEUE', sinceSubmitMs: 0, polls: 0 }, 2), 250, 'never below the shortest gap');
});

test('the margin past the expected end: a tenth of the run time or twice its spread, at least 100 ms, at most 1 s', () => {
  const queued = (runMs: number, devMs?: number) => nextPollDelay(P, { runMs, devMs, samples: 3 }, { status: 'IN_QUEUE', queuePosition: 0, sinceSubmitMs: 0, polls: 0 }, 1);
  assert.equal(queued(500), 600, 'a tenth of 500 is below the floor: 100');
  assert.equal(queued(1000), 1100, 'exactly the floor');
  assert.equal(queued(5000), 5500);
  assert.equal(queued(10_000), 11_000, 'exactly the ceiling');
  assert.equal(queued(30_000), 31_000, 'a tenth of 30 s is above the ceiling: 1 s');
  assert.equal(queued(2000, 150), 2300, 'twice the spread when it is more than a tenth');
  assert.equal(queued(2000, 100), 2200, 'a tenth when the spread is no more');
  assert.equal(queued(2000, 5000), 3000, 'the spread bounded by the ceiling too');
  assert.equal(queued(100_000), 60_000, 'never past the longest gap');
});

test('queue position: whole waves of the places ahead, each a run time; no places counted as one', () => {
  const at = (queuePosition: number | undefined, places: number) =>
    nextPollDelay(P, { runMs: 4000, samples: 3 }, { status: 'IN_QUEUE', queuePosition, sinceSubmitMs: 0, polls: 0 }, places);
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((q) => at(q, 2)), [4400, 4400, 8400, 8400, 12_400, 12_400]);
  assert.equal(at(undefined, 2), 4400, 'no position: next to run');
  assert.equal(at(3, 0), 16_400, 'no places configured: one');
  assert.equal(at(3, 1), 16_400);
});

test('running: the rest of the run time from when it was seen starting, or from its submission less the waves before it', () => {
  const running = (v: { sinceSubmitMs: number; sinceStartMs?: number; queuePosition?: number }) =>
    nextPollDelay(P, { runMs: 10_000, samples: 3 }, { status: 'IN_PROGRESS', polls: 0, ...v }, 2);
  assert.equal(running({ sinceSubmitMs: 30_000, sinceStartMs: 4000 }), 7000, 'seen starting 4 s ago: 6 s left, plus the margin');
  assert.equal(running({ sinceSubmitMs: 4000 }), 7000, 'never seen starting: timed from its submission');
  assert.equal(running({ sinceSubmitMs: 24_000, queuePosition: 4 }), 7000, 'two waves ahead of it when it was submitted: 20 s of them');
  assert.equal(running({ sinceSubmitMs: 5000, queuePosition: 4 }), 11_000, 'a wave ahead not over yet counts as not started');
});

test('past its expected end: looked at again after a fifth of the run time, within the shortest gap and 2 s', () => {
  const overdue = (runMs: number, sinceStartMs: number) =>
    nextPollDelay(P, { runMs, samples: 3 }, { status: 'IN_PROGRESS', sinceSubmitMs: sinceStartMs, sinceStartMs, polls: 0 }, 2);
  assert.equal(overdue(5000, 20_000), 1000);
  assert.equal(overdue(20_000, 60_000), 2000, 'at most 2 s');
  assert.equal(overdue(500, 5000), 250, 'at least the shortest gap');
  // Just at the edge: the rest plus the margin exactly the shortest gap is not overdue.
  assert.equal(overdue(5000, 5000 + 500 - 250), 250);
  assert.equal(overdue(5000, 5000 + 500 - 249), 1000);
});
