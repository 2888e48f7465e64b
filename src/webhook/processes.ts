// WEBHOOK_PROCESSES > 1: `portrait-batch webhook` becomes a primary that forks that many receiver
// processes sharing WEBHOOK_PORT (node:cluster), because one Node process verifies on one core. A
// receiver keeps nothing in memory that matters (its JWKS cache is per process; results are in Redis
// before it answers), so any of them may take any webhook. The primary owns what an operator talks
// to: the admin listener (its /metrics sums every receiver's counters, reported once a second), the
// signals (SIGTERM stops every receiver, each draining what it holds, then the primary), and a
// receiver that dies is replaced.
import cluster, { type Worker } from 'node:cluster';
import { createServer } from 'node:net';
import { Gauge, type Registry } from 'prom-client';
import { SHUTDOWN_GRACE_MS } from '../signals.ts';
import { newWebhookCounters, type WebhookCounters } from './refusals.ts';
import type { RunningWebhook } from './server.ts';

/** How often a receiver reports its counters to the primary (the metrics' lag at most). */
export const COUNTERS_EVERY_MS = 1000;
/** A receiver that died is replaced after this long (a crash loop cannot spin). */
const RESPAWN_DELAY_MS = 1000;

type ReceiverMessage = { type: 'listening'; port: number } | { type: 'counters'; counters: WebhookCounters };
type PrimaryMessage = { type: 'stop' };

const isReceiverMessage = (m: unknown): m is ReceiverMessage =>
  typeof m === 'object' && m !== null && ((m as ReceiverMessage).type === 'listening' || (m as ReceiverMessage).type === 'counters');

/** True in a receiver forked by the primary. */
export const isReceiverProcess = () => cluster.isWorker;

export interface ReceiverProcesses {
  /** The port they share (WEBHOOK_PORT, or the one picked for 0). */
  port: number;
  /** Process ids of the receivers running now. */
  pids(): number[];
  /** Asks every receiver to stop (each drains its requests and closes its connections) and waits for them. */
  stop(): Promise<void>;
}

export interface ReceiverProcessOptions {
  log: (line: string) => void;
  /** Each receiver's counters, kept up to date from its reports; summed by the metrics. */
  track: (counters: WebhookCounters) => void;
  /** The primary's metrics registry: a gauge of receivers listening. */
  registry?: Registry;
}

/** Whether `port` on `host` can be listened on: checked once before forking, so a port in use is one clear error. */
export async function assertPortFree(port: number, host: string): Promise<void> {
  if (port === 0) return;
  await new Promise<void>((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen({ port, host, exclusive: true }, () => probe.close(() => resolve()));
  });
}

/** Primary: forks `n` receivers running this same command and resolves once every one listens. */
export async function startReceiverProcesses(n: number, opts: ReceiverProcessOptions): Promise<ReceiverProcesses> {
  const running = new Map<number, Worker>();
  let stopping = false;
  let port = 0;
  const replacementFailed = (err: Error) => opts.log(`${err.message}; running with ${running.size} of ${n} receiver processes`);
  if (opts.registry) {
    new Gauge({ name: 'portrait_batch_webhook_processes', help: 'Webhook receiver processes listening (WEBHOOK_PROCESSES)', registers: [opts.registry], collect() {
      this.set(running.size);
    } });
  }

  const fork = (index: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const worker = cluster.fork({ PORTRAIT_BATCH_RECEIVER_INDEX: String(index) });
      const counters = newWebhookCounters();
      opts.track(counters);
      let listening = false;
      worker.on('message', (m: unknown) => {
        if (!isReceiverMessage(m)) return;
        if (m.type === 'counters') Object.assign(counters, m.counters);
        else {
          listening = true;
          port = m.port;
          running.set(index, worker);
          resolve();
        }
      });
      worker.on('exit', (code, signal) => {
        if (running.get(index) === worker) running.delete(index);
        if (!listening) return reject(new Error(`webhook receiver process ${index + 1} of ${n} exited (${signal ?? `code ${code}`}) before it listened; its message is above`));
        if (stopping) return;
        opts.log(`webhook receiver process ${index + 1} (pid ${worker.process.pid}) exited (${signal ?? `code ${code}`}); starting another in ${RESPAWN_DELAY_MS} ms`);
        setTimeout(() => {
          if (!stopping) fork(index).catch(replacementFailed);
        }, RESPAWN_DELAY_MS).unref();
      });
    });

  // A second signal exits the primary at once (signals.ts): no receiver is left behind.
  const killAll = () => {
    for (const w of running.values()) w.process.kill('SIGKILL');
  };
  process.once('exit', killAll);

  const stop = async () => {
    stopping = true;
    const exits = [...running.values()].map((w) => new Promise<void>((resolve) => (w.isDead() ? resolve() : w.once('exit', () => resolve()))));
    for (const w of running.values()) if (w.isConnected()) w.send({ type: 'stop' } satisfies PrimaryMessage);
    await Promise.all(exits);
    process.off('exit', killAll);
  };

  try {
    await Promise.all(Array.from({ length: n }, (_, i) => fork(i)));
  } catch (err) {
    await stop();
    throw err;
  }
  return { port, pids: () => [...running.values()].map((w) => w.process.pid!), stop };
}

/**
 * Receiver (a cluster worker): tells the primary it listens, reports its counters, and stops when the
 * primary says so or is gone. Signals are the primary's to handle: Ctrl-C reaches the whole process
 * group, and a receiver must stop once, when told, not twice.
 */
export async function serveAsReceiver(hook: RunningWebhook, close: () => Promise<void>, log: (line: string) => void): Promise<void> {
  const send = (m: ReceiverMessage) =>
    new Promise<void>((resolve) => {
      if (!process.connected) return resolve();
      process.send!(m, undefined, {}, () => resolve());
    });
  const ignore = () => undefined;
  process.on('SIGINT', ignore).on('SIGTERM', ignore);
  await send({ type: 'listening', port: hook.port });
  const report = setInterval(() => void send({ type: 'counters', counters: hook.counters }), COUNTERS_EVERY_MS);
  report.unref();
  await new Promise<void>((resolve) => {
    process.on('message', (m: unknown) => {
      if ((m as PrimaryMessage | undefined)?.type === 'stop') resolve();
    });
    process.once('disconnect', () => resolve());
  });
  clearInterval(report);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      log(`webhook receiver (pid ${process.pid}) not stopped within ${SHUTDOWN_GRACE_MS / 1000} s: exiting`);
      resolve();
    }, SHUTDOWN_GRACE_MS);
    timer.unref();
  });
  await Promise.race([close().catch((err: unknown) => log(`while stopping: ${err instanceof Error ? err.message : String(err)}`)), late]);
  clearTimeout(timer);
  await send({ type: 'counters', counters: hook.counters });
}
