// The schedules file on its own: what a good file gives (defaults included) and, for each way a file
// can be wrong, the one line that names the schedule and what is wrong with it. No server is needed.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { checkTiming, loadSchedulesFile, nextFire, parseSchedules, SchedulesFileError } from '../src/triggers/schedulesFile.ts';
import { ConfigError } from '../src/core/config.ts';

const good = { name: 'nightly', cron: '0 2 * * *', manifest: 's3://my-bucket/exports/' };

/** The problems a text is refused with (fails when it is accepted). */
function problems(text: string, where?: string): string[] {
  try {
    parseSchedules(text, where);
  } catch (err) {
    assert.ok(err instanceof SchedulesFileError, String(err));
    assert.ok(err instanceof ConfigError, 'a configuration error (exit 3)');
    assert.equal(err.name, 'SchedulesFileError');
    return err.problems;
  }
  assert.fail(`accepted: ${text}`);
}

const one = (schedule: unknown) => problems(JSON.stringify({ schedules: [schedule] }));

test('a good file, YAML or JSON: every field read, time zone UTC and no options by default', () => {
  const yaml = `schedules:\n  - name: nightly\n    cron: "0 2 * * *"\n    timezone: Europe/Paris\n    manifest: s3://my-bucket/exports/day.csv.gz\n    options: { maxCost: 50 }\n  - name: n.2_x-y\n    cron: "*/5 * * * * *"\n    manifest: s3://b.c-d/x/\n`;
  assert.deepEqual(parseSchedules(yaml), [
    { name: 'nightly', cron: '0 2 * * *', timezone: 'Europe/Paris', manifest: 's3://my-bucket/exports/day.csv.gz', options: { maxCost: 50 } },
    { name: 'n.2_x-y', cron: '*/5 * * * * *', timezone: 'UTC', manifest: 's3://b.c-d/x/', options: {} },
  ]);
  assert.deepEqual(parseSchedules(JSON.stringify({ schedules: [{ ...good, manifest: 's3://my-bucket/A.CSV' }] })), [
    { ...good, manifest: 's3://my-bucket/A.CSV', timezone: 'UTC', options: {} },
  ]);
  assert.deepEqual(parseSchedules('schedules: []'), []);
});

test('a file that is not a schedules file: one line saying what it should be', () => {
  assert.deepEqual(problems('schedules: [\n  {', 'f.yaml').length, 1);
  assert.match(problems('schedules: [\n  {', 'f.yaml')[0]!, /^f\.yaml: is neither YAML nor JSON \(.{10,}\)$/, "the parser's first line");
  assert.doesNotMatch(problems('schedules: [\n  {')[0]!, /\n/, 'the first line of the parser message only');
  const shape = 'SCHEDULES_FILE: must be an object with one field, schedules: a list of schedules';
  assert.deepEqual(problems('- a\n- b'), [shape]);
  assert.deepEqual(problems('schedules: 3'), [shape]);
  assert.deepEqual(problems(''), ['SCHEDULES_FILE: schedules is missing'], 'an empty file');
  assert.deepEqual(problems(JSON.stringify({ schedules: [], extra: 1 })), ['SCHEDULES_FILE: unknown field "extra"']);
});

test('each bad schedule is named (by name, or by position) with what is wrong, all in one refusal', () => {
  assert.deepEqual(one({ ...good, cronn: 'x', other: 1 }), ['SCHEDULES_FILE: schedule "nightly": unknown fields "cronn", "other"']);
  assert.deepEqual(one({ ...good, options: { maxCost: 5, burst: 1 } }), ['SCHEDULES_FILE: schedule "nightly": unknown field "burst" in options']);
  assert.deepEqual(one({ name: 'x', manifest: good.manifest }), ['SCHEDULES_FILE: schedule "x": cron is missing']);
  assert.deepEqual(one({ name: 'x' }), ['SCHEDULES_FILE: schedule "x": cron is missing; manifest is missing'], 'every problem of a schedule, in one line');
  assert.deepEqual(one(null), ['SCHEDULES_FILE: schedule #1: is not a schedule (an object with name, cron and manifest)']);
  assert.match(one({ ...good, manifest: 's3://bucket/a\nb.csv' })[0]!, /: manifest must be an s3:\/\/bucket\/key URL/, 'a line break in the URL');
  assert.deepEqual(one({ cron: good.cron, manifest: good.manifest }), ['SCHEDULES_FILE: schedule #1: name is missing']);
  assert.deepEqual(one({ ...good, name: '' }), ['SCHEDULES_FILE: schedule #1: name must be 1-64 characters of A-Z a-z 0-9 . _ - (it becomes part of run ids)']);
  assert.deepEqual(one({ ...good, name: 7 }), ['SCHEDULES_FILE: schedule #1: name must be a string']);
  assert.deepEqual(one({ ...good, cron: '' }), [`SCHEDULES_FILE: schedule "nightly": ${one({ ...good, cron: '' })[0]!.split(': ').slice(2).join(': ')}`]);
  for (const name of ['a:b', '-lead', 'x'.repeat(65), 'sp ace']) assert.match(one({ ...good, name })[0]!, /: name must be 1-64 characters/, name);
  assert.deepEqual(parseSchedules(JSON.stringify({ schedules: [{ ...good, name: 'x'.repeat(64) }] })).length, 1, '64 characters are fine');
  for (const manifest of ['https://b/x.csv', 's3://B/x.csv', 's3://bucket', 's3://bucket/', 'xs3://bucket/x.csv',]) {
    assert.match(one({ ...good, manifest })[0]!, /: manifest must be an s3:\/\/bucket\/key URL/, manifest);
  }
  for (const manifest of ['s3://bucket/x.txt', 's3://bucket/x.csv.zip', 's3://bucket/x', 's3://bucket/x.csv ']) {
    assert.deepEqual(one({ ...good, manifest }), ['SCHEDULES_FILE: schedule "nightly": manifest must name a .csv or .csv.gz object, or a prefix ending in /'], manifest);
  }
  for (const maxCost of [0, -1]) assert.deepEqual(one({ ...good, options: { maxCost } }), ['SCHEDULES_FILE: schedule "nightly": options.maxCost must be a positive amount']);
  assert.deepEqual(one({ ...good, options: { maxCost: '5' } }), ['SCHEDULES_FILE: schedule "nightly": options.maxCost must be a number']);

  const many = problems(JSON.stringify({ schedules: [good, { ...good, cron: '61 * * * *' }, { ...good, name: 'tz', timezone: 'Mars/Olympus' }, good, 'text'] }), 'my.yaml');
  assert.deepEqual(many.slice(1), [
    'my.yaml: schedule "tz": timezone "Mars/Olympus" is not an IANA time zone (such as UTC or Europe/Paris)',
    'my.yaml: schedule "nightly": the name is used by another schedule',
    'my.yaml: schedule #5: is not a schedule (an object with name, cron and manifest)',
  ]);
  assert.match(many[0]!, /^my\.yaml: schedule "nightly": cron "61 \* \* \* \*" is not a valid cron pattern \(.+\)$/);
});

test('loadSchedulesFile reads the file, and names a file it cannot read', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'pb-schedules-'));
  try {
    const path = join(dir, 's.json');
    await writeFile(path, JSON.stringify({ schedules: [good] }));
    assert.equal((await loadSchedulesFile(path))[0]!.name, 'nightly');
    await assert.rejects(loadSchedulesFile(join(dir, 'missing.yaml')), (err: unknown) => {
      assert.ok(err instanceof SchedulesFileError);
      assert.deepEqual(err.problems, [`SCHEDULES_FILE ${join(dir, 'missing.yaml')}: cannot be read (ENOENT)`]);
      return true;
    });
    await writeFile(join(dir, 'bad.yaml'), 'schedules: [{ name: x }]');
    await assert.rejects(loadSchedulesFile(join(dir, 'bad.yaml')), (err: unknown) => err instanceof SchedulesFileError && err.problems[0]!.startsWith(`${join(dir, 'bad.yaml')}: schedule "x": `));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('timing: a pattern is read in its time zone; seconds first with 6 fields', () => {
  assert.equal(checkTiming('0 2 * * *', 'Europe/Paris'), undefined);
  assert.match(checkTiming('0 2 * * *', 'Nowhere/City')!, /^timezone "Nowhere\/City" is not an IANA time zone/);
  assert.match(checkTiming('0 25 * * *', 'UTC')!, /^cron "0 25 \* \* \*" is not a valid cron pattern \(/);
  const from = new Date(Date.UTC(2026, 10, 26, 0, 30, 0));
  assert.equal(nextFire({ cron: '0 2 * * *', timezone: 'UTC' }, from).toISOString(), '2026-11-26T02:00:00.000Z');
  assert.equal(nextFire({ cron: '0 2 * * *', timezone: 'Europe/Paris' }, from).toISOString(), '2026-11-26T01:00:00.000Z', '02:00 in Paris is 01:00 UTC in November');
  assert.equal(nextFire({ cron: '30 * * * * *', timezone: 'UTC' }, from).toISOString(), '2026-11-26T00:30:30.000Z');
  assert.ok(nextFire({ cron: '* * * * *', timezone: 'UTC' }).getTime() > Date.now(), 'from now by default');
});
