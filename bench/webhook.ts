// Figure 4: the webhook receiver alone. Pre-signed webhooks (signed with the emulator's key, each for
// a distinct request, URL token minted with WEBHOOK_SECRET) fired by autocannon on loopback at
// `portrait-batch webhook`; every one must be durably recorded (a result job in Redis) — counted
// after. Beside it, the ceiling of bare ED25519 verification in Node on this machine.
import { createPrivateKey, createPublicKey, randomUUID, verify } from 'node:crypto';
import autocannon from 'autocannon';
import { loadConfig } from '../src/core/config.ts';
import { stringifyJson } from '../src/core/exactJson.ts';
import { signatureMessage, signWebhook, WEBHOOK_HEADERS } from '../src/core/webhookSignature.ts';
import { mintWebhookToken } from '../src/core/webhookToken.ts';
import { createPortraitBatch } from '../src/index.ts';
import { runAlone, type BenchContext, type Figure } from './lib/figure.ts';
import { cpuMs } from './lib/proc.ts';
import { round } from './lib/stats.ts';
import { newSigningKeyPem, serviceEnv, spawnRole, startEmulatorProcess, startRunRedis, waitHealthy } from './lib/stack.ts';

const CONNECTIONS = 8;

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
  method: `\`portrait-batch webhook\` in its own process with its own redis-server (AOF, fsync every second); autocannon (${CONNECTIONS} connections, in the bench process) POSTs pre-signed fal webhooks, each for a distinct request with a valid URL token, one fal-sized result payload (~400 B). Every 2xx must be a result job in Redis: the jobs are counted after. Verified webhooks/s = 2xx answers / duration; latency from autocannon. The ceiling: \`crypto.verify\` of ED25519 signatures over fal's message in a loop in one process.`,
  targets: [
    { key: 'webhookPerSec', label: 'verified webhooks/s', test: (v) => v >= 4000, text: '≥ 4,000' },
    { key: 'webhookP99Ms', label: 'webhook p99 ms', test: (v) => v < 25, text: '< 25' },
  ],
  async run(ctx) {
    const n = ctx.quick ? 5_000 : 40_000;
    const { res, warm2xx, recorded, hookCpuMs } = await webhookBurst(ctx, n);
    const ok = res['2xx'];
    const perSec = ok / res.duration;
    const pem = newSigningKeyPem();
    const ceiling = verifyCeiling(pem, ctx.quick ? 500 : 2000);
    const table = [
      '| webhooks sent | 2xx | non-2xx / errors | recorded (result jobs) | webhooks/s | p50 ms | p99 ms | max ms | receiver CPU ms per webhook | bare ED25519 verify/s (one core) |',
      '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      `| ${res.requests.total} | ${ok} | ${res.non2xx} / ${res.errors} | ${recorded - warm2xx} | **${Math.round(perSec)}** | ${res.latency.p50} | ${res.latency.p99} | ${res.latency.max} | ${round(hookCpuMs / Math.max(1, ok), 3)} | ${Math.round(ceiling)} |`,
    ].join('\n');
    const notes = recorded - warm2xx === ok ? ['Every 2xx was recorded: the result jobs in Redis equal the 2xx answers.'] : [`**${ok} 2xx answers but ${recorded - warm2xx} result jobs recorded.**`];
    return {
      json: { webhookPerSec: Math.round(perSec), webhookP99Ms: res.latency.p99, verifyCeilingPerSec: Math.round(ceiling) },
      table,
      setup: `${n} webhooks after 200 for warm-up, ${CONNECTIONS} connections, receiver defaults (8 bodies read at once).`,
      notes,
    };
  },
};

/** n pre-signed webhooks at a receiver of its own (nodeArgs: e.g. --cpu-prof); counts what was recorded. */
export async function webhookBurst(ctx: BenchContext, n: number, nodeArgs: string[] = []) {
  const stack = await ctx.stack();
  const pem = newSigningKeyPem();
  const emulator = await startEmulatorProcess({ signingKeyPem: pem });
  const redis = await startRunRedis(stack, `webhook-${Date.now().toString(36)}`, true);
  const env = await serviceEnv(stack, redis.url, emulator);
  const pb = createPortraitBatch(loadConfig(env), { name: 'bench' });
  const hook = spawnRole(stack, 'webhook', env, nodeArgs);
  try {
    await waitHealthy(env.WEBHOOK_PORT!);
    const hooks = presign(n + 1000, pem, env.WEBHOOK_SECRET!, emulator.url);
    let next = 0;
    const url = `http://127.0.0.1:${env.WEBHOOK_PORT}`;
    // Warm-up (JWKS fetched, JIT): 200 webhooks not counted in the figures (but recorded).
    const warm = await autocannon({ url, connections: 4, amount: 200, requests: [{ method: 'POST', setupRequest: (req) => ({ ...req, ...hooks[next++]! }) }] });
    const cpu0 = cpuMs(hook.pid);
    const res = await autocannon({
      url,
      connections: CONNECTIONS,
      amount: n,
      timeout: 30,
      requests: [{ method: 'POST', setupRequest: (req) => ({ ...req, ...hooks[next++]! }) }],
    });
    const hookCpuMs = cpuMs(hook.pid) - cpu0;
    const counts = await pb.context.queues.results.getJobCounts();
    const recorded = Object.values(counts).reduce((a, b) => a + b, 0);
    return { res, warm2xx: warm['2xx'], recorded, hookCpuMs };
  } finally {
    await hook.stop();
    await pb.close();
    await redis.stop();
    await emulator.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
