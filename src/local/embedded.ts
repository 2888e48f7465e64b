// The whole service in this process on the embedded stack (a private redis-server, the embedded S3
// server, the fal emulator — each only when the environment names no real one): the library handle
// with its webhook receiver and workers started. What demo, bench and the test fixture share.
import { assertReachable } from '../core/reachability.ts';
import { createPortraitBatch, type PortraitBatch, type PortraitBatchOptions, type RunningAdmin, type RunningWebhook, type RunningWorkers } from '../index.ts';
import { startLocalStack, type LocalStack, type LocalStackOptions } from './stack.ts';

export interface EmbeddedService {
  stack: LocalStack;
  pb: PortraitBatch;
  webhook?: RunningWebhook;
  workers?: RunningWorkers;
  /** The admin listener (metrics, health, dashboard), when asked for. */
  admin?: RunningAdmin;
  stop(): Promise<void>;
}

export async function startEmbeddedService(
  opts: LocalStackOptions & PortraitBatchOptions & { webhook?: boolean; workers?: boolean; admin?: boolean },
): Promise<EmbeddedService> {
  const stack = await startLocalStack(opts);
  const pb = createPortraitBatch(stack.cfg, { name: opts.name, policy: opts.policy, log: opts.log });
  let webhook: RunningWebhook | undefined;
  let workers: RunningWorkers | undefined;
  let admin: RunningAdmin | undefined;
  try {
    await assertReachable(pb.context); // a REDIS_URL given to the embedded stack may be out of reach
    await pb.context.storage.ensureBucket();
    if (opts.webhook !== false) webhook = await pb.startWebhook({ host: '127.0.0.1' });
    if (opts.workers !== false) workers = await pb.startWorkers();
    if (opts.admin) admin = await pb.startAdmin({ role: opts.name });
  } catch (err) {
    await pb.close().catch(() => undefined);
    await stack.stop();
    throw err;
  }
  return {
    stack,
    pb,
    webhook,
    workers,
    admin,
    async stop() {
      await pb.close();
      await stack.stop();
    },
  };
}
