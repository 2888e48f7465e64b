// The long-running roles as library calls (graphile-worker's `run`): each owns its start-up order —
// the variables it needs (exit 3), then whether Redis (and S3) answer (exit 1), then its work, its
// admin listener, and the wait for SIGTERM/SIGINT (signals.ts) — so `cli.ts` only parses arguments.
// Each takes a handle that has connected to nothing yet, resolves once the role has stopped, and
// closes the handle when start-up fails. The heavy parts are imported when called: loading the
// library loads no receiver processes and no scheduler. `demo --keep-alive` serves the same way once
// its run has ended (runKeepAlive), on the demo's embedded stack.
import { requireRoleVars } from './core/config.ts';
import type { PortraitBatch, RunningAdmin } from './portraitBatch.ts';
import { stopOnSignal } from './signals.ts';
import type { Schedule } from './triggers/schedulesFile.ts';

export interface RoleOptions {
  /** One line for the operator (start-up, shutdown); default stderr. */
  log?: (line: string) => void;
}

const stderrLine = (line: string) => void process.stderr.write(`${line}\n`);

/** Runs `step`; when it fails, the handle is closed before the error goes on. */
async function orClose<T>(pb: PortraitBatch, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    await pb.close();
    throw err;
  }
}

async function assertReachableOrClose(pb: PortraitBatch, needs: { s3?: boolean } = {}): Promise<void> {
  const { assertReachable } = await import('./core/reachability.ts');
  await orClose(pb, () => assertReachable(pb.context, needs));
}

/** Up until SIGINT/SIGTERM, then stopped in order within the grace period; health answers 503 from the signal on. */
async function serveUntilSignal(stop: () => Promise<void>, admin: RunningAdmin, log: (line: string) => void): Promise<void> {
  await stopOnSignal(stop, { log, onSignal: () => admin.draining() });
}

/** `portrait-batch worker`: produce, submit, store and reconcile workers (FAL_KEY and WEBHOOK_SECRET, Redis and S3). */
export async function runWorker(pb: PortraitBatch, opts: RoleOptions = {}): Promise<void> {
  const log = opts.log ?? stderrLine;
  requireRoleVars(pb.config, 'worker');
  await assertReachableOrClose(pb, { s3: true });
  await orClose(pb, () => pb.startWorkers());
  const admin = await orClose(pb, () => pb.startAdmin({ role: 'worker' }));
  log(`workers running; admin on ${admin.url}`);
  await serveUntilSignal(() => pb.close(), admin, log);
}

/**
 * `portrait-batch webhook`: the receiver (WEBHOOK_SECRET, Redis). With WEBHOOK_PROCESSES > 1 this
 * process is the primary of that many receivers (src/webhook/processes.ts), and each of them runs
 * this same call as a receiver.
 */
export async function runWebhook(pb: PortraitBatch, opts: RoleOptions = {}): Promise<void> {
  const log = opts.log ?? stderrLine;
  const [{ listenError }, { isReceiverProcess, serveAsReceiver }] = await Promise.all([import('./core/reachability.ts'), import('./webhook/processes.ts')]);
  requireRoleVars(pb.config, 'webhook');
  // Without workers here, a Redis outage is the workers' to say at once (see core/dependencies.ts).
  pb.context.dependencies.sayRedisOutages({
    afterMs: isReceiverProcess() ? Infinity : pb.context.policy.dependencies.redisWarnAfterMs,
    affects: 'webhooks are refused (fal delivers them again)',
  });
  await assertReachableOrClose(pb);
  if (pb.config.WEBHOOK_PROCESSES > 1 && !isReceiverProcess()) return serveReceiverProcesses(pb, log);
  const hook = await pb.startWebhook({ host: '0.0.0.0' }).catch(async (err: unknown) => {
    await pb.close();
    throw listenError(err, 'WEBHOOK_PORT', pb.config.WEBHOOK_PORT);
  });
  if (isReceiverProcess()) return serveAsReceiver(hook, () => pb.close(), log);
  const admin = await orClose(pb, () => pb.startAdmin({ role: 'webhook' }));
  log(`webhook receiver listening on :${hook.port}; admin on ${admin.url}`);
  await serveUntilSignal(() => pb.close(), admin, log);
}

/** The primary of WEBHOOK_PROCESSES receivers: the admin listener, the signals, the receivers' lives. */
async function serveReceiverProcesses(pb: PortraitBatch, log: (line: string) => void): Promise<void> {
  const [{ listenError }, { assertPortFree, startReceiverProcesses }] = await Promise.all([import('./core/reachability.ts'), import('./webhook/processes.ts')]);
  const { WEBHOOK_PORT: port, WEBHOOK_PROCESSES: n } = pb.config;
  const receivers = await assertPortFree(port, '0.0.0.0')
    .then(() => startReceiverProcesses(n, { log, track: (c) => pb.context.metrics.trackWebhook(c), registry: pb.context.metrics.registry }))
    .catch(async (err: unknown) => {
      await pb.close();
      throw listenError(err, 'WEBHOOK_PORT', port);
    });
  const admin = await orClose(pb, () => pb.startAdmin({ role: 'webhook' }));
  log(`webhook receiver listening on :${receivers.port} in ${n} processes (pids ${receivers.pids().join(', ')}); admin on ${admin.url}`);
  await serveUntilSignal(async () => {
    await receivers.stop();
    await pb.close();
  }, admin, log);
}

/**
 * `portrait-batch scheduler`: the cron schedules of SCHEDULES_FILE and the drop folder (Redis and S3).
 * A bad schedules file is refused before anything is connected to (exit 3).
 */
export async function runScheduler(pb: PortraitBatch, opts: RoleOptions = {}): Promise<void> {
  const log = opts.log ?? stderrLine;
  const [{ loadSchedulesFile }, { startScheduler }] = await Promise.all([import('./triggers/schedulesFile.ts'), import('./triggers/scheduler.ts')]);
  const cfg = pb.config;
  requireRoleVars(cfg, 'scheduler');
  pb.context.dependencies.sayRedisOutages({ afterMs: pb.context.policy.dependencies.redisWarnAfterMs, affects: 'schedules and the drop folder wait' });
  const file = cfg.SCHEDULES_FILE;
  const schedules = file ? await orClose(pb, () => loadSchedulesFile(file)) : undefined;
  await assertReachableOrClose(pb, { s3: true });
  const admin = await orClose(pb, () => pb.startAdmin({ role: 'scheduler' }));
  const scheduler = await orClose(pb, () => startScheduler(pb, { schedules }));
  log(`scheduler running: ${schedules ? `${schedules.length} schedules` : 'no SCHEDULES_FILE'}, drop folder s3://${cfg.S3_BUCKET}/${cfg.DROP_PREFIX}; admin on ${admin.url}`);
  await serveUntilSignal(async () => {
    await scheduler.close();
    await pb.close();
  }, admin, log);
}

/**
 * `portrait-batch demo --keep-alive`, once the demo's run has ended: its embedded stack goes on serving
 * the dashboard, metrics and health — and the scheduler, when `scheduler` is set (SCHEDULES_FILE or
 * DROP_PREFIX) — until SIGTERM/SIGINT. The stack stays the demo's to stop, after this resolves.
 */
export async function runKeepAlive(pb: PortraitBatch, opts: RoleOptions & { scheduler?: boolean; schedules?: Schedule[] } = {}): Promise<void> {
  const log = opts.log ?? stderrLine;
  const scheduler = opts.scheduler ? await (await import('./triggers/scheduler.ts')).startScheduler(pb, { schedules: opts.schedules }) : undefined;
  log(`serving the dashboard, metrics and health${scheduler ? ' and the scheduler' : ''} until SIGTERM/SIGINT`);
  await stopOnSignal(async () => scheduler?.close(), { log });
}
