// `portrait-batch chaos --faults`: the command a user runs, at test size (few rows, short faults). Each
// fault gets its own run on its own embedded stack; the command breaks only the servers it started.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { FaultReport } from '../src/chaos.ts';
import { runCli } from './helpers/processes.ts';

test('chaos --faults redis-crash,redis-stall: each fault reported; nothing lost, failed, doubled or paid twice', { timeout: 300_000 }, async () => {
  const res = await runCli(['chaos', '--rows', '12', '--faults', 'redis-crash,redis-stall', '--fault-seconds', '1', '--json'], {});
  assert.equal(res.code, 0, res.stderr.slice(-3000));
  const { faults } = JSON.parse(res.stdout) as { faults: FaultReport[] };
  assert.deepEqual(
    faults.map((f) => f.fault),
    ['redis-crash', 'redis-stall'],
  );
  for (const f of faults) {
    assert.deepEqual(f.problems, [], f.fault);
    assert.equal(f.completed, 12, `${f.fault}: every row completed`);
    assert.equal(f.failed + f.lost + f.duplicated + f.extraPaid, 0, `${f.fault}: ${JSON.stringify(f)}`);
    assert.ok(f.faultSeconds >= 0.9, `${f.fault} lasted ${f.faultSeconds} s`);
    assert.ok(Number.isFinite(f.logLinesPerSecond) && Number.isInteger(f.warnings), `${f.fault}: log figures`);
    // The worker and the receiver both see Redis go: the stack says it once, and its recovery once.
    assert.ok(f.outageWarnings <= 1 && f.recoveryWarnings <= 1, `${f.fault}: ${f.outageWarnings} outage and ${f.recoveryWarnings} recovery warnings`);
  }
  assert.match(res.stderr, /chaos redis-crash: 12 rows, 12 completed, 0 failed, lost 0, duplicated 0, extra paid 0/);
});

test('chaos --faults refuses an unknown fault, naming it and the known ones', async () => {
  const res = await runCli(['chaos', '--faults', 'redis-kill,disk-full'], {});
  assert.equal(res.code, 2);
  assert.match(res.stderr, /unknown fault disk-full; one of kill, redis-kill, redis-crash/);
});
