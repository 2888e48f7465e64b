// Figure 13: Redis bytes a finished run keeps, rejected rows — a gzip of 10^6 rows whose face is
// `javascript:x` (every row rejected), run to its end on the embedded stack; then MEMORY USAGE of every
// key naming the run, and the keyspace's used_memory before and after. Before #16 such a run left
// ~200 B a row in a `pb:run:<id>:rejected` hash, for ever.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { startEmbeddedService } from '../src/local/embedded.ts';
import { runAlone, type Figure } from './lib/figure.ts';
import { round } from './lib/stats.ts';

export const figure: Figure = {
  id: 'redis-rejected',
  title: '13. Redis bytes a finished run keeps, rejected rows',
  method:
    "A gzip of a header and N rows of `javascript:x` (every row rejected) run to its end on the embedded stack (its own redis-server, s3rver, emulator). Then `MEMORY USAGE` of every key whose name holds the run id (its `pb:run:<id>*` keys, rows, BullMQ jobs), and `INFO memory` used_memory before `startRun` and after the run finished.",
  targets: [{ key: 'redisBytesRejectedRun', label: 'Redis bytes a finished run keeps (10^6 rejected rows)', test: (v) => v < 2048, text: '< 2 KB' }],
  async run(ctx) {
    const rows = ctx.quick ? 10_000 : 1_000_000;
    const dir = await mkdtemp(join(tmpdir(), 'pb-bench-rejected-'));
    const svc = await startEmbeddedService({ dataDir: dir, env: { LOG_LEVEL: 'silent' }, defaults: {}, persistentRedis: false, name: 'bench' });
    try {
      const redis = svc.pb.context.redis;
      const path = join(dir, 'rejected.csv.gz');
      const gz = gzipSync(`face_url\n${'javascript:x\n'.repeat(rows)}`);
      await writeFile(path, gz);
      const usedMemory = async () => Number(/used_memory:(\d+)/.exec(await redis.info('memory'))![1]);
      const before = await usedMemory();
      const t0 = Date.now();
      const { runId } = await svc.pb.startRun(path);
      const status = await svc.pb.waitForRun(runId, { timeoutMs: 30 * 60_000 });
      const seconds = (Date.now() - t0) / 1000;
      const after = await usedMemory();
      const keys: string[] = [];
      let cursor = '0';
      do {
        const [next, batch] = await redis.scan(cursor, 'MATCH', `*${runId}*`, 'COUNT', 1000);
        cursor = next;
        keys.push(...batch);
      } while (cursor !== '0');
      let bytes = 0;
      const perKey: string[] = [];
      for (const k of keys.sort()) {
        const n = Number((await redis.call('MEMORY', 'USAGE', k, 'SAMPLES', '0')) ?? 0);
        bytes += n;
        perKey.push(`\`${k.replace(runId, '<id>')}\` ${n} B`);
      }
      const table = [
        '| rows (rejected) | gzip | run took | keys naming the run | their bytes (MEMORY USAGE) | used_memory after − before |',
        '| ---: | ---: | ---: | ---: | ---: | ---: |',
        `| ${status.rejected}/${rows} | ${round(gz.length / 1024, 1)} KiB | ${round(seconds, 1)} s | ${keys.length} | **${bytes}** | ${after - before} B |`,
      ].join('\n');
      return {
        json: { redisBytesRejectedRun: bytes },
        table,
        setup: `${rows} rows of \`javascript:x\`, gzip, default RUN_RETENTION (7d: the keys are still there when measured).`,
        notes: [`Keys: ${perKey.join(', ')}.`, 'used_memory after − before also counts BullMQ\'s shared structures (event streams, queue metadata) and allocator noise.'],
      };
    } finally {
      await svc.stop();
      await rm(dir, { recursive: true, force: true });
    }
  },
};

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
