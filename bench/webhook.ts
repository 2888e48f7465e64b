// Figure 4: the webhook receiver alone. Pre-signed webhooks (signed with the emulator's key, each for
// a distinct request, URL token minted with WEBHOOK_SECRET) fired by autocannon on loopback at
// `portrait-batch webhook`; every one must be durably recorded (a result job in Redis) — counted
// after. Beside it, the ceiling of bare ED25519 verification in Node on this machine.
import { createPrivateKey, createPublicKey, randomUUID, verify } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';
import { loadConfig } from '../src/core/config.ts';
import { stringifyJson } from '../src/core/exactJson.ts';
import { signatureMessage, signWebhook, WEBHOOK_HEADERS } from '../src/core/webhookSignature.ts';
import { mintWebhookToken } from '../src/core/webhookToken.ts';
import { createPortraitBatch } from '../src/index.ts';
import { runAlone, type BenchContext, type Figure } from './lib/figure.ts';
import { cpuMs, loadAverage, treeCpuMs } from './lib/proc.ts';
import { round } from './lib/stats.ts';
import { newSigningKeyPem, serviceEnv, spawnRole, startEmulatorProcess, startRunRedis, waitHealthy } from './lib/stack.ts';

const CONNECTIONS = 8;
/** Receiver processes measured: the default, and one per core of a 2-core machine. */
const PROCESS_COUNTS = [1, 2];
/** The configuration the JSON keys report: one receiver per core (WEBHOOK_PROCESSES=auto). */
const REAL_PROCESSES = Math.min(Math.max(...PROCESS_COUNTS), availableParallelism());

interface Signed {
  path: string;
  headers: Record<string, string>;
  body: Buffer;
}

function presign(n: number, pem: string, secret: string, emulatorUrl: string): Signed[] {
  const key = createPrivateKey(pem);
  const timestamp = String(Math.floor(Date.now() / 1000));
  const out: Signed[] = [];
  for (let i = 0; i < n; i++) {
    const requestId = randomUUID();
    const target = { runId: 'bench-webhooks', key: `r${i}`, attempt: 1 };
    const body = Buffer.from(
      stringifyJson({
        request_id: requestId,
        gateway_request_id: requestId,
        status: 'OK',
        payload: { images: [{ url: `${emulatorUrl}/files/${requestId}/0.png`, content_type: 'image/png', width: 768, height: 1024 }], seed: '1234567890123', prompt: 'Face to full portrait' },
        error: null,
      }),
    );
    const signature = signWebhook({ requestId, userId: 'emulator-user', timestamp }, body, key);
    out.push({
      path: `/fal/webhook?run=${target.runId}&row=${target.key}&attempt=1&token=${mintWebhookToken(secret, target)}`,
      headers: {
        'content-type': 'application/json',
        [WEBHOOK_HEADERS.requestId]: requestId,
        [WEBHOOK_HEADERS.userId]: 'emulator-user',
        [WEBHOOK_HEADERS.timestamp]: timestamp,
        [WEBHOOK_HEADERS.signature]: signature,
      },
      body,
    });
  }
  return out;
}

/** Bare crypto.verify of ED25519 signatures over fal's message, in a loop, for `ms`. */
function verifyCeiling(pem: string, ms: number): number {
  const priv = createPrivateKey(pem);
  const pub = createPublicKey(priv);
  const samples = presign(64, pem, 'x', 'http://127.0.0.1');
  const prepared = samples.map((s) => ({
    message: signatureMessage({ requestId: s.headers[WEBHOOK_HEADERS.requestId]!, userId: 'emulator-user', timestamp: s.headers[WEBHOOK_HEADERS.timestamp]! }, s.body),
    sig: Buffer.from(s.headers[WEBHOOK_HEADERS.signature]!, 'hex'),
  }));
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    for (const p of prepared) if (verify(null, p.message, pub, p.sig)) n++;
  }
  return n / ((performance.now() - t0) / 1000);
}

export const figure: Figure = {
  id: 'webhook',
  title: '4. Webhook receiver',
  method: `\`portrait-batch webhook\` (WEBHOOK_PROCESSES=1, then 2: a primary and two receivers sharing the port) with its own redis-server (AOF, fsync every second); autocannon (${CONNECTIONS} connections, in the bench process) POSTs pre-signed fal webhooks, each for a distinct request with a valid URL token, one fal-sized result payload (~400 B). Every 2xx must be a result job in Redis: the jobs are counted after. Verified webhooks/s = 2xx answers / duration; latency from autocannon; receiver CPU from /proc, summed over the primary and its receivers. The ceiling: \`crypto.verify\` of ED25519 signatures over fal's message in a loop in one process.`,
  targets: [
    { key: 'webhookPerSec', label: 'verified webhooks/s', test: (v) => v >= 4000, text: '≥ 4,000' },
    { key: 'webhookP99Ms', label: 'webhook p99 ms', test: (v) => v < 25, text: '< 25' },
  ],
  async run(ctx) {
    const n = ctx.quick ? 5_000 : 40_000;
    const runs: Burst[] = [];
    for (const processes of PROCESS_COUNTS) runs.push(await webhookBurst(ctx, n, [], processes));
    const pem = newSigningKeyPem();
    const ceiling = verifyCeiling(pem, ctx.quick ? 500 : 2000);
    const row = (b: Burst) => {
      const ok = b.res['2xx'];
      return `| ${b.processes} | ${b.res.requests.total} | ${ok} | ${b.res.non2xx} / ${b.res.errors} | ${b.recorded - b.warm2xx} | **${Math.round(ok / b.res.duration)}** | ${b.res.latency.p50} | ${b.res.latency.p99} | ${b.res.latency.max} | ${round(b.hookCpuMs / Math.max(1, ok), 3)}${b.processes > 1 ? ` (primary ${round(b.primaryCpuMs / Math.max(1, ok), 3)})` : ''} | ${round(b.loadBefore, 2)} |`;
    };
    const table = [
      '| WEBHOOK_PROCESSES | webhooks sent | 2xx | non-2xx / errors | recorded (result jobs) | webhooks/s | p50 ms | p99 ms | max ms | receiver CPU ms per webhook (all its processes) | load before |',
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      ...runs.map(row),
      '',
      `Bare ED25519 verification in one process: **${Math.round(ceiling)}**/s.`,
    ].join('\n');
    const notes = runs.map((b) =>
      b.recorded - b.warm2xx === b.res['2xx']
        ? `WEBHOOK_PROCESSES=${b.processes}: every 2xx was recorded (${b.res['2xx']} answers, ${b.recorded - b.warm2xx} result jobs in Redis).`
        : `**WEBHOOK_PROCESSES=${b.processes}: ${b.res['2xx']} 2xx answers but ${b.recorded - b.warm2xx} result jobs recorded.**`,
    );
    // The figure of record: the receiver as deployed on this machine, one process per core (WEBHOOK_PROCESSES=auto).
    const real = runs.find((b) => b.processes === REAL_PROCESSES)!;
    notes.push(`The JSON keys (\`webhookPerSec\`, \`webhookP99Ms\`) are the WEBHOOK_PROCESSES=${REAL_PROCESSES} run: one receiver per core of this ${REAL_PROCESSES}-core machine (\`auto\`).`);
    return {
      json: { webhookPerSec: Math.round(real.res['2xx'] / real.res.duration), webhookP99Ms: real.res.latency.p99, verifyCeilingPerSec: Math.round(ceiling) },
      table,
      setup: `${n} webhooks per configuration after 200 per receiver process for warm-up (WEBHOOK_PROCESSES=${PROCESS_COUNTS.join(' and ')}), ${CONNECTIONS} connections, receiver defaults (8 bodies read at once per process).`,
      notes,
    };
  },
};

export interface Burst {
  processes: number;
  res: Awaited<ReturnType<typeof autocannon>>;
  warm2xx: number;
  recorded: number;
  /** CPU of the receiver's processes (primary and receivers) during the measured burst. */
  hookCpuMs: number;
  /** Of which the primary (WEBHOOK_PROCESSES > 1: it hands connections to the receivers). */
  primaryCpuMs: number;
  loadBefore: number;
}

/** n pre-signed webhooks at a receiver of its own (nodeArgs: e.g. --cpu-prof; `processes`: WEBHOOK_PROCESSES); counts what was recorded. */
export async function webhookBurst(ctx: BenchContext, n: number, nodeArgs: string[] = [], processes = 1): Promise<Burst> {
  const stack = await ctx.stack();
  const pem = newSigningKeyPem();
  const emulator = await startEmulatorProcess({ signingKeyPem: pem });
  const redis = await startRunRedis(stack, `webhook-${Date.now().toString(36)}`, true);
  const env = await serviceEnv(stack, redis.url, emulator, { WEBHOOK_PROCESSES: String(processes) });
  const pb = createPortraitBatch(loadConfig(env), { name: 'bench' });
  const logName = `webhook-${processes}p-${Date.now().toString(36)}`;
  const hook = spawnRole(stack, 'webhook', env, nodeArgs, logName);
  try {
    // Every receiver listening (the CLI says so once they all are), not just the first.
    await waitHealthy(env.WEBHOOK_PORT!);
    const log = join(stack.dir, `${logName}.log`);
    for (const end = Date.now() + 60_000; !/receiver listening on/.test(await readFile(log, 'utf8')); ) {
      if (Date.now() > end) throw new Error(`the webhook receiver did not say it listens: ${log}`);
      await sleep(100);
    }
    const hooks = presign(n + 1000, pem, env.WEBHOOK_SECRET!, emulator.url);
    let next = 0;
    const url = `http://127.0.0.1:${env.WEBHOOK_PORT}`;
    // Warm-up (JWKS fetched, JIT): 200 webhooks not counted in the figures (but recorded).
    const warm = await autocannon({ url, connections: Math.max(4, CONNECTIONS), amount: 200 * processes, requests: [{ method: 'POST', setupRequest: (req) => ({ ...req, ...hooks[next++]! }) }] });
    const loadBefore = loadAverage();
    const cpu0 = treeCpuMs(hook.pid);
    const primary0 = cpuMs(hook.pid);
    const res = await autocannon({
      url,
      connections: CONNECTIONS,
      amount: n,
      timeout: 30,
      requests: [{ method: 'POST', setupRequest: (req) => ({ ...req, ...hooks[next++]! }) }],
    });
    const hookCpuMs = treeCpuMs(hook.pid) - cpu0;
    const primaryCpuMs = cpuMs(hook.pid) - primary0;
    const counts = await pb.context.queues.results.getJobCounts();
    const recorded = Object.values(counts).reduce((a, b) => a + b, 0);
    return { processes, res, warm2xx: warm['2xx'], recorded, hookCpuMs, primaryCpuMs: processes > 1 ? primaryCpuMs : 0, loadBefore };
  } finally {
    await hook.stop();
    await pb.close();
    await redis.stop();
    await emulator.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
