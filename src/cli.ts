// The `portrait-batch` command: parses arguments and calls the library. Nothing else lives here.
import { Command, InvalidArgumentError } from 'commander';
import { ConfigError, loadConfig, requireVar } from './core/config.ts';
import { createContext, type Context } from './core/context.ts';
import { resumeSubmissions } from './core/pause.ts';
import { runChaos } from './chaos.ts';
import { runDemo } from './demo.ts';
import { startEmulator } from './emulator/index.ts';
import { ManifestError } from './manifest/index.ts';
import { produceRun } from './producer/produce.ts';
import { waitForRun } from './producer/wait.ts';
import { formatStatus, runStatus } from './status.ts';
import { startWebhookServer } from './webhook/server.ts';
import { startWorkers } from './worker/index.ts';

/** Exit codes: 2 bad input (manifest, arguments), 3 bad configuration, 1 anything else. */
class ExitError extends Error {
  constructor(
    message: string,
    readonly code: number,
  ) {
    super(message);
  }
}

const say = (line: string) => process.stderr.write(`${line}\n`);

function withContext<T>(name: string, fn: (ctx: Context) => Promise<T>): Promise<T> {
  const ctx = createContext(loadConfig(), name);
  return fn(ctx).finally(() => ctx.close());
}

/** Keeps a long-running role up until SIGINT/SIGTERM, then closes it gracefully. */
async function serveUntilSignal(close: () => Promise<void>): Promise<void> {
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  say('shutting down…');
  await close();
}

const port = (v: string) => {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new InvalidArgumentError('must be a port number 0-65535');
  return n;
};

const program = new Command('portrait-batch')
  .description('Turn CSV manifests of face photos into full-body portraits with fal.ai, at scale.')
  .showHelpAfterError();

program
  .command('run')
  .description('validate a manifest and enqueue its rows (workers and webhook run separately)')
  .argument('<manifest>', 'CSV manifest: face_url plus optional model parameters per row')
  .option('--run-id <id>', 'run id (default: derived from the manifest content, so a rerun resumes the run)')
  .option('--wait', 'wait until every row is finished and the report is written')
  .option('--json', 'print one JSON object as the last line')
  .action(async (manifest: string, o: { runId?: string; wait?: boolean; json?: boolean }) => {
    await withContext('producer', async (ctx) => {
      const res = await produceRun(ctx, manifest, { runId: o.runId });
      say(`${res.resumed ? 'resumed' : 'started'} run ${res.runId} (${res.total} rows)`);
      if (o.wait) {
        await waitForRun(ctx, res.runId, {
          onProgress: (r, pause) => say(`${r.state}: ${r.completed} completed, ${r.failed} failed, ${r.rejected} rejected${pause ? ` — PAUSED: ${pause}` : ''}`),
        });
      }
      const status = await runStatus(ctx, res.runId);
      if (o.json) process.stdout.write(`${JSON.stringify(status)}\n`);
      else say(formatStatus(status!));
    });
  });

program
  .command('status')
  .description('show a run: counters, state, why it is paused or stopped, where its report is')
  .argument('<runId>')
  .option('--json', 'print JSON')
  .action(async (runId: string, o: { json?: boolean }) => {
    await withContext('status', async (ctx) => {
      const s = await runStatus(ctx, runId);
      if (!s) throw new ExitError(`no run ${runId}`, 2);
      process.stdout.write(o.json ? `${JSON.stringify(s)}\n` : `${formatStatus(s)}\n`);
    });
  });

program
  .command('resume')
  .description('lift a pause caused by fal refusing the API key (after fixing FAL_KEY)')
  .action(async () => {
    await withContext('resume', async (ctx) => say((await resumeSubmissions(ctx)) ? 'submissions resumed' : 'submissions were not paused'));
  });

program
  .command('webhook')
  .description('run the webhook receiver (POST /fal/webhook)')
  .action(async () => {
    const ctx = createContext(loadConfig(), 'webhook');
    const hook = await startWebhookServer(ctx);
    say(`webhook receiver listening on :${hook.port}`);
    await serveUntilSignal(async () => {
      await hook.close();
      await ctx.close();
    });
  });

program
  .command('worker')
  .description('run submit, store and reconcile workers')
  .action(async () => {
    const cfg = loadConfig();
    requireVar(cfg, 'FAL_KEY', 'by the worker: it calls fal');
    const ctx = createContext(cfg, 'worker');
    const workers = await startWorkers(ctx);
    say('workers running');
    await serveUntilSignal(async () => {
      await workers.close();
      await ctx.close();
    });
  });

program
  .command('emulator')
  .description("run the fal emulator (fal's queue and webhook protocol, for offline use)")
  .option('--port <port>', 'port to listen on', port, 8090)
  .action(async (o: { port: number }) => {
    const emu = await startEmulator({ port: o.port });
    say(`fal emulator on ${emu.url} (JWKS ${emu.jwksUrl}); set FAL_QUEUE_URL=${emu.url} FAL_JWKS_URL=${emu.jwksUrl}`);
    await serveUntilSignal(() => emu.close());
  });

program
  .command('demo')
  .description('run everything in one process on the embedded default and leave a contact sheet')
  .option('--manifest <file>', 'manifest to run', 'examples/faces.csv')
  .option('--data-dir <dir>', 'where state and outputs are kept', 'demo-data')
  .option('--json', 'print one JSON object as the last line')
  .action(async (o: { manifest: string; dataDir: string; json?: boolean }) => {
    const res = await runDemo({ manifest: o.manifest, dataDir: o.dataDir, log: say });
    say(`run ${res.runId}: ${res.state} — ${res.completed} completed, ${res.failed} failed, ${res.rejected} rejected, ${res.canceled} canceled`);
    say(`open ${res.outputDir}/index.html`);
    if (o.json) process.stdout.write(`${JSON.stringify(res)}\n`);
  });

program
  .command('chaos')
  .description('run N rows with every fault on, kill the worker and the receiver twice each, and audit the result')
  .option('--rows <n>', 'rows to run', (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('must be a positive integer');
    return n;
  }, 2000)
  .option('--json', 'print one JSON object as the last line')
  .action(async (o: { rows: number; json?: boolean }) => {
    const res = await runChaos({ rows: o.rows, log: say });
    for (const p of res.audit.problems) say(`  problem: ${p}`);
    say(`chaos: ${res.rows} rows, ${res.completed} completed, ${res.failed} failed, lost ${res.lost}, duplicated ${res.duplicated}, extra submits ${res.extraSubmits}, ambiguous submits ${res.ambiguousSubmits}, ${res.kills} kills, ${res.seconds} s`);
    const { audit: _audit, ...summary } = res;
    if (o.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
    if (res.lost || res.duplicated || res.extraSubmits) throw new ExitError('chaos run found lost, duplicated or extra-submitted rows', 1);
  });

try {
  await program.parseAsync(process.argv);
  process.exit(0);
} catch (err) {
  if (err instanceof ManifestError) {
    say(`error: ${err.message}`);
    process.exit(2);
  }
  if (err instanceof ConfigError) {
    say(`error: ${err.message}`);
    process.exit(3);
  }
  if (err instanceof ExitError) {
    say(`error: ${err.message}`);
    process.exit(err.code);
  }
  say(`error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
  process.exit(1);
}
