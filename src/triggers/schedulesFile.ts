// The schedules file (SCHEDULES_FILE, YAML or JSON): `schedules: [{name, cron, timezone, manifest, options}]`.
// Read and checked completely before the scheduler connects to anything: a bad file is a configuration
// error (exit 3) naming the schedule and what is wrong with it.
import { readFile } from 'node:fs/promises';
import parser from 'cron-parser';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../core/config.ts';

export interface Schedule {
  name: string;
  /** Cron pattern, 5 fields, or 6 with seconds first (BullMQ's parser, cron-parser). */
  cron: string;
  /** IANA time zone the pattern is read in. */
  timezone: string;
  /** `s3://bucket/key`, or `s3://bucket/prefix/` whose newest .csv/.csv.gz is taken at each tick. */
  manifest: string;
  options: ScheduleRunOptions;
}

/** Run options a schedule may give its runs. */
export interface ScheduleRunOptions {
  maxCost?: number;
}

/** A bad schedules file: a configuration error (exit 3). */
export class SchedulesFileError extends ConfigError {
  override name = 'SchedulesFileError';
}

/** Schedule names become part of run ids and BullMQ scheduler ids (which may not hold ':'). */
const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const S3_MANIFEST = /^s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\/.+$/;

const scheduleSchema = z.strictObject({
  name: z.string().regex(NAME, 'name must be 1-64 characters of A-Z a-z 0-9 . _ - (it becomes part of run ids)'),
  cron: z.string().min(1),
  timezone: z.string().min(1).default('UTC'),
  manifest: z
    .string()
    .regex(S3_MANIFEST, 'manifest must be an s3://bucket/key URL, or an s3://bucket/prefix/ ending in / whose newest manifest is taken')
    .refine((m) => m.endsWith('/') || /\.csv(\.gz)?$/i.test(m), 'manifest must name a .csv or .csv.gz object, or a prefix ending in /'),
  options: z
    .strictObject({ maxCost: z.number().positive('options.maxCost must be a positive amount') })
    .partial()
    .default({}),
});

const fileSchema = z.strictObject({ schedules: z.array(z.unknown()) });

/** Reads and checks the file; throws SchedulesFileError with one line per problem. */
export async function loadSchedulesFile(path: string): Promise<Schedule[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new SchedulesFileError([`SCHEDULES_FILE ${path}: cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`]);
  }
  return parseSchedules(text, path);
}

/** Parses the text of a schedules file (YAML, which JSON is a subset of). */
export function parseSchedules(text: string, where = 'SCHEDULES_FILE'): Schedule[] {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new SchedulesFileError([`${where}: is neither YAML nor JSON (${(err as Error).message.split('\n')[0]})`]);
  }
  const top = fileSchema.safeParse(doc ?? {});
  if (!top.success) throw new SchedulesFileError([`${where}: ${describe(top.error.issues, 'must be an object with one field, schedules: a list of schedules')}`]);

  const problems: string[] = [];
  const schedules: Schedule[] = [];
  const seen = new Set<string>();
  top.data.schedules.forEach((raw, i) => {
    const label = scheduleLabel(raw, i);
    const parsed = scheduleSchema.safeParse(raw);
    if (!parsed.success) {
      problems.push(`${where}: ${label}: ${describe(parsed.error.issues)}`);
      return;
    }
    const s = parsed.data as Schedule;
    const timing = checkTiming(s.cron, s.timezone);
    if (timing) problems.push(`${where}: ${label}: ${timing}`);
    else if (seen.has(s.name)) problems.push(`${where}: ${label}: the name is used by another schedule`);
    else schedules.push(s);
    seen.add(s.name);
  });
  if (problems.length) throw new SchedulesFileError(problems);
  return schedules;
}

/** Why the pattern or time zone is unusable, or undefined when both are fine. */
export function checkTiming(cron: string, timezone: string): string | undefined {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: timezone });
  } catch {
    return `timezone ${JSON.stringify(timezone)} is not an IANA time zone (such as UTC or Europe/Paris)`;
  }
  try {
    parser.parseExpression(cron, { tz: timezone, currentDate: new Date() }).next();
  } catch (err) {
    return `cron ${JSON.stringify(cron)} is not a valid cron pattern (${(err as Error).message})`;
  }
  return undefined;
}

/** When the schedule fires next after `from` (for listing when no scheduler has registered it yet). */
export function nextFire(s: Pick<Schedule, 'cron' | 'timezone'>, from = new Date()): Date {
  return parser.parseExpression(s.cron, { tz: s.timezone, currentDate: from }).next().toDate();
}

function scheduleLabel(raw: unknown, i: number): string {
  const name = raw && typeof raw === 'object' ? (raw as { name?: unknown }).name : undefined;
  return typeof name === 'string' && name ? `schedule ${JSON.stringify(name)}` : `schedule #${i + 1}`;
}

function describe(issues: z.core.$ZodIssue[], fallback?: string): string {
  return issues
    .map((issue) => {
      const at = issue.path.join('.');
      if (issue.code === 'unrecognized_keys') return `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((k) => JSON.stringify(k)).join(', ')}${at ? ` in ${at}` : ''}`;
      if (issue.code === 'invalid_type' && /received undefined$/.test(issue.message)) return `${at} is missing`;
      if (issue.code === 'invalid_type') return fallback ?? (at ? `${at} must be a ${issue.expected}` : 'is not a schedule (an object with name, cron and manifest)');
      return issue.message;
    })
    .join('; ');
}
