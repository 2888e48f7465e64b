// `npm run bench [-- --quick] [--json] [figure…]`: runs every figure (or the named ones: fal-calls,
// time, service-cost, webhook, ingest, redis, store-latency, scale-out, cli-startup, durability,
// profile, dashboard-page, redis-rejected), prints each table on stderr, and — full sizes only — saves each figure
// under bench/results/ and rewrites bench/RESULTS.md.
// With --json the last stdout line is one JSON object with every key below (null if not measured).
import { figure as cliStartup } from './cli-startup.ts';
import { figure as dashboardPage } from './dashboard-page.ts';
import { figure as durability } from './durability.ts';
import { figure as falCalls } from './fal-calls.ts';
import { figure as ingest } from './ingest.ts';
import { createContext, FIGURE_ORDER, log, parseArgs, runFigure, saveFigure, writeResultsMd, type Figure, type JsonFigures } from './lib/figure.ts';
import { figure as profile } from './profile.ts';
import { figure as redis } from './redis.ts';
import { figure as redisRejected } from './redis-rejected.ts';
import { figure as scaleOut } from './scale-out.ts';
import { figure as serviceCost } from './service-cost.ts';
import { figure as storeLatency } from './store-latency.ts';
import { figure as time } from './time.ts';
import { figure as webhook } from './webhook.ts';

/** The JSON line's keys, in order (a contract: issue 11). */
export const JSON_KEYS = [
  'falCallsPerImage',
  'pollCallsPerImage',
  'baselineCallsPerImage',
  'e2eRatio',
  'idealRatio',
  'faultCompletedShare',
  'baselineFaultCompletedShare',
  'baselineExtraSubmits',
  'serviceCpuMsPerRow',
  'serviceRowsPerSec',
  'webhookPerSec',
  'webhookP99Ms',
  'verifyCeilingPerSec',
  'ingestRowsPerSec',
  'ingestPeakRssMb',
  'redisBytesPerCompletedRow',
  'storeLatencyP99Ms',
  'redisBytesRejectedRun',
] as const;

const FIGURES: Figure[] = [falCalls, time, serviceCost, webhook, ingest, redis, storeLatency, scaleOut, cliStartup, durability, profile, dashboardPage, redisRejected];

const { quick, json, names } = parseArgs(process.argv.slice(2));
const unknown = names.filter((n) => !FIGURES.some((f) => f.id === n));
if (unknown.length) {
  log(`unknown figure ${unknown.join(', ')}: choose from ${FIGURES.map((f) => f.id).join(', ')}`);
  process.exit(2);
}
// The profile is a diagnosis, not a figure of the JSON line: full runs only, unless named.
const chosen = names.length ? FIGURES.filter((f) => names.includes(f.id)) : FIGURES.filter((f) => !quick || f.id !== 'profile');

const out: JsonFigures = Object.fromEntries(JSON_KEYS.map((k) => [k, null]));
const failed: string[] = [];
const t0 = Date.now();
const ctx = await createContext(quick);
try {
  for (const fig of chosen) {
    try {
      const saved = await runFigure(fig, ctx);
      Object.assign(out, saved.json);
      if (!quick) {
        await saveFigure(saved);
        await writeResultsMd(FIGURE_ORDER);
      }
    } catch (err) {
      failed.push(fig.id);
      log(`figure ${fig.id} failed: ${(err as Error).stack ?? String(err)}`);
    }
  }
} finally {
  await ctx.close();
}
log(`\nbench: ${chosen.length - failed.length}/${chosen.length} figures in ${Math.round((Date.now() - t0) / 1000)} s${quick ? ' (quick: RESULTS.md left as it is)' : '; bench/RESULTS.md rewritten'}`);
for (const k of JSON_KEYS) log(`  ${k.padEnd(28)} ${out[k]}`);
if (json) process.stdout.write(`${JSON.stringify(Object.fromEntries(JSON_KEYS.map((k) => [k, out[k] ?? null])))}\n`);
process.exit(failed.length ? 1 : 0);
