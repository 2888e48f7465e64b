// Breaking what the service depends on, on the embedded stack (the chaos run, fault tests): the
// redis-server it started (a child process: SIGKILL, SIGSTOP, or a crash that loses the AOF's last
// second), the S3 endpoint the service is given (the fault proxy in front of the embedded S3 server,
// both stopped), and the fal emulator (stopped, then back with its requests, or without them as a
// fal that restarted). Only processes and servers this stack started are touched, by their own handle.
import { cp, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { startEmulator, type EmulatorOptions, type EmulatorStats, type RunningEmulator } from '../emulator/index.ts';
import type { RunningFaultProxy } from './faultProxy.ts';
import { AOF_DIR, startRedisServer, type RunningRedis } from './redisServer.ts';
import { startS3Server, type RunningS3 } from './s3Server.ts';

export interface StackFaultsOptions {
  redis: RunningRedis;
  redisDir: string;
  s3?: { server: RunningS3; dir: string; bucket: string; proxy: RunningFaultProxy };
  emulator?: { server: RunningEmulator; options: EmulatorOptions; stateDir: string };
}

export class StackFaults {
  private redisNow: RunningRedis;
  private s3Now?: RunningS3;
  private emulatorNow?: RunningEmulator;
  /** Stats of emulators that restarted without their requests (a fresh journal), summed. */
  private forgottenStats: EmulatorStats[] = [];
  private generation = 0;
  /** Requests a restarted fal forgot (accepted, not finished when it went away). */
  falForgot = 0;

  constructor(private readonly opts: StackFaultsOptions) {
    this.redisNow = opts.redis;
    this.s3Now = opts.s3?.server;
    this.emulatorNow = opts.emulator?.server;
  }

  get redis(): RunningRedis {
    return this.redisNow;
  }

  get redisPid(): number {
    return this.redisNow.process.pid!;
  }

  /** redis-server SIGKILLed, started again on its own AOF after `downMs`. */
  async redisKill(downMs: number): Promise<void> {
    await this.killRedis();
    await sleep(downMs);
    await this.startRedis();
  }

  /**
   * A crash of Redis's host that loses the AOF's last `lostMs` of writes (what `appendfsync everysec`
   * risks): the AOF is copied, Redis runs on for `lostMs`, is SIGKILLed, and starts again from the copy
   * after `downMs`.
   */
  async redisCrash(lostMs: number, downMs: number): Promise<void> {
    const copy = await this.copyAof();
    await sleep(lostMs);
    await this.redisRestoreFrom(copy, downMs);
  }

  /** A copy of Redis's AOF as it is on disk now; returns its directory. */
  async copyAof(): Promise<string> {
    const copy = join(this.opts.redisDir, `${AOF_DIR}.copy`);
    await rm(copy, { recursive: true, force: true });
    await cp(join(this.opts.redisDir, AOF_DIR), copy, { recursive: true });
    return copy;
  }

  /** redis-server SIGKILLed, started again after `downMs` from `aofCopy` (a copy of its AOF directory made earlier). */
  async redisRestoreFrom(aofCopy: string, downMs = 0): Promise<void> {
    await this.killRedis();
    const aof = join(this.opts.redisDir, AOF_DIR);
    await rm(aof, { recursive: true, force: true });
    await rename(aofCopy, aof);
    await sleep(downMs);
    await this.startRedis();
  }

  /** redis-server stopped (SIGSTOP: connections open, nothing answered) for `ms`. */
  async redisStall(ms: number): Promise<void> {
    process.kill(this.redisPid, 'SIGSTOP');
    try {
      await sleep(ms);
    } finally {
      process.kill(this.redisPid, 'SIGCONT');
    }
  }

  /** The S3 endpoint refuses connections for `ms` (the embedded S3 server is stopped too). */
  async s3Outage(ms: number): Promise<void> {
    const s3 = this.opts.s3;
    if (!s3) throw new Error('s3-outage needs the embedded S3 server');
    await s3.proxy.pause();
    await this.s3Now?.close().catch(() => undefined);
    this.s3Now = undefined;
    await sleep(ms);
    this.s3Now = await startS3Server({ dir: s3.dir, port: s3.server.port, buckets: [s3.bucket] });
    await s3.proxy.resume();
  }

  /** The fal emulator stopped for `ms`; with `forget`, it comes back without its requests and files (a fal that restarted). */
  async falOutage(ms: number, forget = false): Promise<void> {
    const e = this.opts.emulator;
    if (!e || !this.emulatorNow) throw new Error('fal faults need the embedded fal emulator');
    const before = this.emulatorNow.stats();
    await this.emulatorNow.close();
    this.emulatorNow = undefined;
    await sleep(ms);
    let stateDir = e.stateDir;
    if (forget) {
      this.forgottenStats.push(before);
      this.falForgot += Math.max(0, before.accepted - before.completed - before.failed - before.canceled - before.lost);
      stateDir = `${e.stateDir}-restart${++this.generation}`;
    } else if (this.generation) stateDir = `${e.stateDir}-restart${this.generation}`;
    this.emulatorNow = await startEmulator({ ...e.options, stateDir, port: e.server.port });
  }

  /** What every emulator of this stack accepted, per row (the audit's book of fal's submissions). */
  acceptedByRow(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const s of [...this.forgottenStats, this.emulatorNow?.stats()]) {
      for (const [k, v] of Object.entries(s?.acceptedByRow ?? {})) out[k] = (out[k] ?? 0) + v;
    }
    return out;
  }

  /** Stops whatever this object started in place of the stack's own servers. */
  async stop(): Promise<void> {
    if (this.redisNow !== this.opts.redis) await this.redisNow.stop();
    if (this.s3Now && this.s3Now !== this.opts.s3?.server) await this.s3Now.close().catch(() => undefined);
    if (this.emulatorNow && this.emulatorNow !== this.opts.emulator?.server) await this.emulatorNow.close();
  }

  private async killRedis(): Promise<void> {
    const child = this.redisNow.process;
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  }

  private async startRedis(): Promise<void> {
    const old = this.redisNow;
    this.redisNow = await startRedisServer({ dir: this.opts.redisDir, port: old.port });
    if (old !== this.opts.redis) await old.stop();
  }
}
