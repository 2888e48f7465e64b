// The `portrait-batch` command: parses arguments and calls the library (src/index.ts). Nothing else
// lives here. With --json, stdout holds exactly one JSON object; everything else goes to stderr.
import { createWriteStream } from 'node:fs';
import { resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Command, CommanderError, InvalidArgumentError } from 'commander';
// Only what every command needs is imported here; each command imports the rest inside its action
// (`await import(…)`), so `--help` and a quick command load no more than they use. The modules left
// here load no package but commander (keep it so: the start-up time is a bench figure, "CLI start-up").
import { FAULT_NAMES, type FaultName } from './chaosFaults.ts';
import { RunControlError } from './control/errors.ts';
import { ContainmentError, outputFile } from './outputs/contained.ts';
import type { DemoResult } from './demo.ts';
import { ERROR_CATEGORIES, FAL_ERROR_TYPES, parseCategories, type ErrorCategory } from './core/falErrors.ts';
import { redactText } from './core/redact.ts';
import type { PortraitBatch } from './portraitBatch.ts';
import { manifestSource } from './manifest/source.ts';
import { progressReporter } from './progress.ts';
import { InterruptedError, stopOnSignal } from './signals.ts';

/** Exit codes: 2 bad input (manifest, arguments, unknown run), 3 bad configuration, 1 anything else. */
class ExitError extends Error {
  constructor(
    message: string,
    readonly code: number,
    /** Its command already printed its --json object (which says what went wrong): no second one. */
    readonly jsonPrinted = false,
  ) {
    super(message);
  }
}

const say = (line: string) => process.stderr.write(`${redactText(line)}\n`);
const print = (line: string) => process.stdout.write(`${line}\n`);
const printJson = (value: unknown) => print(JSON.stringify(value));

/** The library for one command, after its start-up check (Redis, and S3 when `needs.s3`). */
async function withLibrary<T>(name: string, fn: (pb: PortraitBatch) => Promise<T>, needs: { s3?: boolean } = {}): Promise<T> {
  // The handle alone, not index.ts (which also exports the roles, the scheduler and the notice): a
  // command that reads Redis loads Redis and what it reads (the context builds S3, fal and BullMQ on first use).
  const [{ createPortraitBatch }, { loadConfig }, { assertReachable }] = await Promise.all([import('./createPortraitBatch.ts'), import('./core/config.ts'), import('./core/reachability.ts')]);
  const pb = createPortraitBatch(loadConfig(), { name });
  try {
    await assertReachable(pb.context, needs);
    return await fn(pb);
  } finally {
    await pb.close();
  }
}

/** Keeps the emulator up until SIGINT/SIGTERM, then closes it (within the grace period; see signals.ts). */
async function serveUntilSignal(close: () => Promise<void>): Promise<void> {
  await stopOnSignal(close, { log: say });
}

const port = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number 0-65535');
  return n;
};
const money = (v: string) => {
  const n = Number(v);
  if (!/^\d+(\.\d+)?$/.test(v.trim()) || !Number.isFinite(n)) throw new InvalidArgumentError('must be an amount such as 25 or 12.50');
  return n;
};

/** `emulator --error-rates`: type=rate pairs of fal's error types, each rate within 0..1. */
const errorRates = (v: string): Record<string, number> => {
  const out: Record<string, number> = {};
  for (const pair of v.split(',').map((p) => p.trim()).filter(Boolean)) {
    const [type, rate] = pair.split('=');
    const n = Number(rate);
    // The error table's types: the emulator plays each of them (test/emulator.test.ts checks it).
    if (!type || !Object.hasOwn(FAL_ERROR_TYPES, type)) throw new InvalidArgumentError(`${JSON.stringify(type ?? pair)} is not one of fal's error types (${Object.keys(FAL_ERROR_TYPES).join(', ')})`);
    if (rate === undefined || !Number.isFinite(n) || n < 0 || n > 1) throw new InvalidArgumentError(`${type}: the rate must be a number from 0 to 1`);
    out[type] = n;
  }
  return out;
};

/** `retry --only`: a comma list of error categories; any other word is refused by name (exit 2). */
const categoryList = (v: string): ErrorCategory[] => {
  const parsed = parseCategories(v);
  if (!parsed.ok) throw new InvalidArgumentError(`${JSON.stringify(parsed.bad)} is not an error category (one of ${ERROR_CATEGORIES.join(', ')})`);
  return parsed.categories;
};

const program = new Command('portrait-batch')
  .description('Turn CSV manifests of face photos into full-body portraits with fal.ai, at scale.')
  .showHelpAfterError()
  // Bad arguments and unknown commands exit 2, not commander's 1 (see the final handler).
  .exitOverride();

program
  .command('run')
  .description('record a run of a manifest (local file or s3://bucket/key, also .gz) and return its id; workers produce it')
  .argument('<manifest>', 'CSV manifest: face_url plus optional model parameters per row')
  .option('--run-id <id>', 'run id (default: derived from the manifest content, so a rerun resumes the run)')
  .option('--wait', 'follow the run until every row is finished and the report is written')
  .option('--dry-run', 'validate and estimate the cost only: needs no Redis, S3 or fal')
  .option('--preflight', 'with --dry-run: look at every face (reachable, an image, its size), so unsized rows are estimated at their face\'s size')
  .option('--max-cost <amount>', 'stop submitting once the estimated cost of submitted work would pass this', money)
  .option('--json', 'print one JSON object on stdout')
  .action(async (manifest: string, o: { runId?: string; wait?: boolean; dryRun?: boolean; preflight?: boolean; maxCost?: number; json?: boolean }) => {
    if (o.preflight && !o.dryRun) throw new ExitError('--preflight goes with --dry-run (a run looks at every face anyway, unless PREFLIGHT=off)', 2, false);
    if (o.dryRun) {
      const [{ dryRun }, { loadConfig }] = await Promise.all([import('./producer/inspect.ts'), import('./core/config.ts')]);
      // One line rewritten in place on a terminal: how many faces were looked at.
      const onLooked = o.preflight && process.stderr.isTTY ? (n: number) => process.stderr.write(`\rpreflight: ${n} faces looked at`) : undefined;
      const est = await dryRun(manifest, loadConfig(), { preflight: o.preflight, onLooked });
      if (onLooked) process.stderr.write('\n');
      if (o.json) printJson(est);
      else {
        print(`${est.rows} rows: ${est.valid} valid, ${est.rejected} rejected · ${est.images} images · ${est.megapixels} MP · estimated ${est.estimatedCost.toFixed(2)} ${est.currency}`);
        if (est.preflight) say(`  preflight looked at ${est.preflight.looked} faces: ${est.preflight.refused} refused (counted in rejected)`);
        if (est.unsizedRows) say(`  ${est.unsizedRows} rows give no image_size and are estimated at 1 MP an image (--preflight reads their faces' sizes)`);
      }
      return;
    }
    // A wrong local path is the usual mistake: name it at once, before waiting on Redis or S3.
    if (!/^s3:\/\//i.test(manifest)) (await manifestSource(manifest).open()).destroy();
    await withLibrary('producer', async (pb) => {
      const res = await pb.startRun(manifest, { runId: o.runId, maxCost: o.maxCost });
      if (res.resumed && o.maxCost !== undefined) say(`note: run ${res.runId} already exists; it keeps the policy (and cost cap) it was created with`);
      say(`${res.resumed ? 'resumed' : 'started'} run ${res.runId} (${res.total} rows, estimated ${res.estimatedCost.toFixed(2)} ${res.currency})`);
      if (!o.wait) {
        if (o.json) printJson({ ...(await pb.status(res.runId)), resumed: res.resumed });
        else print(res.runId);
        return;
      }
      if (!o.json) print(res.runId);
      const { formatStatus } = await import('./status.ts');
      const progress = progressReporter();
      const status = await pb.waitForRun(res.runId, { onProgress: (s) => progress.update(s) });
      progress.end();
      if (o.json) printJson({ ...status, resumed: res.resumed });
      else say(formatStatus(status));
    }, { s3: true });
  });

program
  .command('status')
  .description('show a run: counts, elapsed, rows/s, ETA, cost so far, why it is paused or stopped, where its report is')
  .argument('<runId>')
  .option('--json', 'print one JSON object on stdout')
  .action(async (runId: string, o: { json?: boolean }) => {
    await withLibrary('status', async (pb) => {
      const s = await pb.status(runId);
      if (!s) throw new ExitError(`no run ${runId}`, 2);
      const { formatStatus } = await import('./status.ts');
      print(o.json ? JSON.stringify(s) : formatStatus(s));
    });
  });

program
  .command('runs')
  .description('list every run, newest first: state, counts, started/finished, cost')
  .option('--json', 'print one JSON object on stdout: {runs: [...]}')
  .action(async (o: { json?: boolean }) => {
    await withLibrary('runs', async (pb) => {
      const runs = await pb.listRuns();
      const { formatRunList } = await import('./status.ts');
      print(o.json ? JSON.stringify({ runs }) : formatRunList(runs));
    });
  });

program
  .command('cancel')
  .description('stop a run: nothing more is submitted, queued fal requests are canceled, unfinished rows end canceled')
  .argument('<runId>')
  .option('--json', 'print one JSON object on stdout')
  .action(async (runId: string, o: { json?: boolean }) => {
    await withLibrary('cancel', async (pb) => {
      const res = await pb.cancelRun(runId);
      if (o.json) printJson(res);
      else print(res.outcome === 'finished' ? `run ${runId} had already finished (${res.state}); nothing changed` : `run ${runId} canceled`);
    });
  });

program
  .command('retry')
  .description("start a new run of a finished run's failed rows (same parameters and row keys); prints its id")
  .argument('<runId>')
  .option('--only <categories>', `retry only failed rows of these error categories, comma-separated (${ERROR_CATEGORIES.join(', ')}); default every failed row`, categoryList)
  .option('--json', 'print one JSON object on stdout')
  .action(async (runId: string, o: { json?: boolean; only?: ErrorCategory[] }) => {
    await withLibrary('retry', async (pb) => {
      const res = await pb.retryFailed(runId, { only: o.only });
      say(`run ${res.runId} retries ${res.rows} failed rows of ${runId}`);
      if (o.json) printJson(res);
      else print(res.runId);
    });
  });

program
  .command('report')
  .description("write a finished run's report.csv to stdout or a file")
  .argument('<runId>')
  .option('--out <file>', 'write to this file instead of stdout')
  .action(async (runId: string, o: { out?: string }) => {
    await withLibrary('report', async (pb) => {
      const csv = await pb.report(runId);
      await pipeline(csv, o.out ? createWriteStream(outputFile(o.out)) : process.stdout, { end: Boolean(o.out) });
      if (o.out) say(`report of ${runId} written to ${o.out}`);
    }, { s3: true });
  });

program
  .command('download')
  .description("copy a finished run's images, report, summary and a contact sheet (index.html) into a folder")
  .argument('<runId>')
  .argument('<dir>')
  .option('--json', 'print one JSON object on stdout')
  .action(async (runId: string, dir: string, o: { json?: boolean }) => {
    await withLibrary('download', async (pb) => {
      const res = await pb.download(runId, resolve(dir));
      // Keys that name no file inside the folder were not written; the rest was (exit 4, with the count).
      for (const r of res.refused) say(`refused: ${r.reason}`);
      const refused = res.refused.length ? `; ${res.refused.length} keys refused (named above), not written` : '';
      if (res.refused.length) throw new ExitError(`${res.files} files of run ${runId} in ${res.dir}${refused}; open ${res.contactSheet}`, 4);
      if (o.json) printJson(res);
      else print(`${res.files} files of run ${runId} in ${res.dir}; open ${res.contactSheet}`);
    }, { s3: true });
  });

program
  .command('resume')
  .description('lift a pause caused by fal refusing the API key (after fixing FAL_KEY)')
  .option('--json', 'print one JSON object on stdout')
  .action(async (o: { json?: boolean }) => {
    await withLibrary('resume', async (pb) => {
      const resumed = await pb.resume();
      if (o.json) printJson({ resumed });
      else say(resumed ? 'submissions resumed' : 'submissions were not paused');
    });
  });

/** A long-running role (src/roles.ts) on a handle of its own: it checks, connects, serves and stops. */
async function runRole(name: 'webhook' | 'worker' | 'scheduler'): Promise<void> {
  const { createPortraitBatch, loadConfig, runScheduler, runWebhook, runWorker } = await import('./index.ts');
  const run = { webhook: runWebhook, worker: runWorker, scheduler: runScheduler }[name];
  await run(createPortraitBatch(loadConfig(), { name }), { log: say });
}

program
  .command('webhook')
  .description('run the webhook receiver (POST /fal/webhook)')
  .action(() => runRole('webhook'));

program
  .command('worker')
  .description('run produce, submit, store and reconcile workers')
  .action(() => runRole('worker'));

program
  .command('scheduler')
  .description('run the cron schedules (SCHEDULES_FILE) and poll the S3 drop folder (DROP_PREFIX); starts runs, workers produce them')
  .action(() => runRole('scheduler'));

program
  .command('schedules')
  .description('list the schedules (of SCHEDULES_FILE, else those registered) with their next fire time and last run')
  .option('--json', 'print one JSON object on stdout: {schedules: [...]}')
  .action(async (o: { json?: boolean }) => {
    const [{ loadConfig }, { loadSchedulesFile }, { formatSchedules, listSchedules }] = await Promise.all([
      import('./core/config.ts'),
      import('./triggers/schedulesFile.ts'),
      import('./triggers/cron.ts'),
    ]);
    const cfg = loadConfig();
    const fromFile = cfg.SCHEDULES_FILE ? await loadSchedulesFile(cfg.SCHEDULES_FILE) : undefined;
    await withLibrary('schedules', async (pb) => {
      const schedules = await listSchedules(pb.context, fromFile);
      print(o.json ? JSON.stringify({ schedules }) : formatSchedules(schedules));
    });
  });

program
  .command('emulator')
  .description("run the fal emulator (fal's queue and webhook protocol, for offline use)")
  .option('--port <port>', 'port to listen on', port, 8090)
  .option('--host <address>', 'address to listen on (0.0.0.0 in a container, for the compose network)', '127.0.0.1')
  .option('--public-url <url>', 'base URL the workers reach it at, put in its status, result and file URLs (e.g. http://emulator:8090)')
  .option('--no-payload-storage', "keep results only fal's short window (1 h, 6 min when 10 KB or more) instead of payload storage's 30 days")
  .option('--error-rates <type=rate,...>', "fail this share of requests with each of fal's error types (e.g. runner_server_error=0.1,image_load_error=0.02)", errorRates)
  .action(async (o: { port: number; host: string; publicUrl?: string; payloadStorage: boolean; errorRates?: Record<string, number> }) => {
    const [{ startEmulator }, { listenError }] = await Promise.all([import('./emulator/index.ts'), import('./core/reachability.ts')]);
    const emu = await startEmulator({
      port: o.port,
      host: o.host,
      publicUrl: o.publicUrl,
      resultRetention: { payloadStorage: o.payloadStorage },
      faults: o.errorRates ? { errorRates: o.errorRates } : undefined,
    }).catch((err: unknown) => Promise.reject(listenError(err, '--port', o.port, o.host)));
    say(`fal emulator on ${emu.url} (JWKS ${emu.jwksUrl}); set FAL_QUEUE_URL=${emu.url} FAL_JWKS_URL=${emu.jwksUrl}`);
    await serveUntilSignal(() => emu.close());
  });

program
  .command('demo')
  .description('run everything in one process on the embedded default and leave a contact sheet')
  .option('--manifest <file>', 'manifest to run', 'examples/faces.csv')
  .option('--data-dir <dir>', 'where state and outputs are kept', 'demo-data')
  .option('--keep-alive', 'then keep serving the dashboard, metrics and health until SIGTERM/SIGINT (with the scheduler when SCHEDULES_FILE or DROP_PREFIX is set)')
  .option('--json', 'print one JSON object on stdout')
  .action(async (o: { manifest: string; dataDir: string; keepAlive?: boolean; json?: boolean }) => {
    const [{ runDemo }, { loadSchedulesFile }, { runKeepAlive }] = await Promise.all([import('./demo.ts'), import('./triggers/schedulesFile.ts'), import('./roles.ts')]);
    // With triggers configured, a bad schedules file is refused before the stack starts (exit 3).
    const triggers = o.keepAlive && Boolean(process.env.SCHEDULES_FILE || process.env.DROP_PREFIX);
    const schedules = triggers && process.env.SCHEDULES_FILE ? await loadSchedulesFile(process.env.SCHEDULES_FILE) : undefined;
    const progress = progressReporter();
    const log = (line: string) => {
      progress.end();
      say(line);
    };
    const report = (res: DemoResult) => {
      progress.end();
      say(`run ${res.runId}: ${res.state} — ${res.completed} completed, ${res.failed} failed, ${res.rejected} rejected, ${res.canceled} canceled`);
      say(`open ${res.outputDir}/index.html`);
      // Without --keep-alive the admin listener closes with the demo: a URL here would be a dead link.
      if (res.dashboardUrl) say(o.keepAlive ? `dashboard: ${res.dashboardUrl}` : 'dashboard: closed with the demo; `npm run demo -- --keep-alive` keeps it open');
      if (o.json) printJson(res);
    };
    let reported = false;
    // After the run: served as a role (src/roles.ts) until SIGTERM/SIGINT, then the demo stops its stack.
    const keepAlive = async (pb: PortraitBatch, res: DemoResult) => {
      report(res);
      reported = true;
      await runKeepAlive(pb, { scheduler: triggers, schedules, log: say });
    };
    const res = await runDemo({ manifest: o.manifest, dataDir: o.dataDir, log, onProgress: (s) => progress.update(s), keepAlive: o.keepAlive ? keepAlive : undefined });
    if (!reported) report(res);
  });

program
  .command('chaos')
  .description('run N rows with every fault on, kill the worker and the receiver twice each, and audit the result; with --faults, one run per fault')
  .option('--rows <n>', 'rows to run (default 2000; 500 with --faults)', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer');
    return n;
  })
  .option('--faults <list>', `comma-separated, one run each: ${FAULT_NAMES.join(',')}`, (v) => {
    const names = v.split(',').map((f) => f.trim()).filter(Boolean);
    const unknown = names.filter((f) => !(FAULT_NAMES as readonly string[]).includes(f));
    if (unknown.length || !names.length) throw new InvalidArgumentError(`unknown fault ${unknown.join(', ') || '(none)'}; one of ${FAULT_NAMES.join(', ')}`);
    return names as FaultName[];
  })
  .option('--fault-seconds <s>', 'how long each outage lasts (default 15)', (v) => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new InvalidArgumentError('must be a positive number of seconds');
    return n;
  })
  .option('--json', 'print one JSON object on stdout')
  .action(async (o: { rows?: number; faults?: FaultName[]; faultSeconds?: number; json?: boolean }) => {
    const { runChaos, runChaosFaults } = await import('./chaos.ts');
    if (o.faults) {
      const reports = await runChaosFaults({ rows: o.rows ?? 500, faults: o.faults, faultMs: o.faultSeconds && o.faultSeconds * 1000, log: say });
      for (const r of reports) {
        for (const p of r.problems) say(`  ${r.fault} problem: ${p}`);
        say(
          `chaos ${r.fault}: ${r.rows} rows, ${r.completed} completed, ${r.failed} failed, lost ${r.lost}, duplicated ${r.duplicated}, extra paid ${r.extraPaid}, ` +
            `forgotten by fal ${r.falForgot} (resubmitted ${r.resubmittedForgotten}), fault ${r.faultSeconds} s, ${r.logLinesPerSecond} log lines/s, ${r.warnings} warning lines (outage ${r.outageWarnings}, recovery ${r.recoveryWarnings}), ${r.seconds} s`,
        );
      }
      if (o.json) printJson({ faults: reports });
      if (reports.some((r) => r.lost || r.duplicated || r.extraPaid || r.failed)) throw new ExitError('a fault run lost, duplicated, failed or paid twice for rows', 1, !!o.json);
      return;
    }
    const res = await runChaos({ rows: o.rows ?? 2000, log: say });
    for (const p of res.audit.problems) say(`  problem: ${p}`);
    say(`chaos: ${res.rows} rows, ${res.completed} completed, ${res.failed} failed, lost ${res.lost}, duplicated ${res.duplicated}, extra submits ${res.extraSubmits}, ambiguous submits ${res.ambiguousSubmits}, ${res.kills} kills, ${res.seconds} s`);
    say(`  ${res.brokenFaces.failedToLoad} of the ${res.brokenFaces.rows} rows with an undecodable face failed with image_load_error, as they must`);
    const { audit: _audit, ...summary } = res;
    if (o.json) printJson(summary);
    if (res.lost || res.duplicated || res.extraSubmits) throw new ExitError('chaos run found lost, duplicated or extra-submitted rows', 1, !!o.json);
    if (res.brokenFaces.failedToLoad !== res.brokenFaces.rows) throw new ExitError('chaos run: a row with an undecodable face did not fail with image_load_error', 1, !!o.json);
  });

/** The exit code an error ends the command with. */
async function exitCodeOf(err: unknown): Promise<number> {
  if (err instanceof CommanderError) return err.code === 'commander.helpDisplayed' || err.code === 'commander.version' ? 0 : 2;
  // Imported only on this path: the error is one of theirs only if the command loaded them already.
  const [{ ConfigError }, { ManifestError }] = await Promise.all([import('./core/config.ts'), import('./manifest/index.ts')]);
  if (err instanceof ManifestError || err instanceof RunControlError || err instanceof ContainmentError) return 2;
  if (err instanceof ConfigError) return 3;
  if (err instanceof ExitError) return err.code;
  if (err instanceof InterruptedError) return err.exitCode;
  return 1;
}

try {
  await program.parseAsync(process.argv);
  process.exit(0);
} catch (err) {
  const code = await exitCodeOf(err);
  // commander has already printed its own message (and the help) for argument errors.
  if (!(err instanceof CommanderError)) {
    // One sentence for the operator; the stack only when asked for (LOG_LEVEL=debug or trace).
    const debug = ['debug', 'trace'].includes(process.env.LOG_LEVEL ?? '');
    if (err instanceof InterruptedError) say(err.message);
    else say(`error: ${err instanceof Error ? (debug ? (err.stack ?? err.message) : err.message) : String(err)}`);
  }
  // With --json, stdout still holds exactly one JSON object.
  if (process.argv.includes('--json') && code !== 0 && !(err instanceof ExitError && err.jsonPrinted)) printJson({ error: err instanceof Error ? err.message : String(err), exitCode: code });
  process.exit(code);
}
