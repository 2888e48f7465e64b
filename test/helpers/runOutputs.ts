// A finished run's outputs as tests read them: its report.csv as rows, and one row's metadata
// (meta/<rowKey>.json) from S3.
import { parse } from 'csv-parse/sync';
import { runLayout } from '../../src/core/layout.ts';
import type { PortraitBatch } from '../../src/index.ts';
import type { RowMeta } from '../../src/worker/flush.ts';
import type { TestStack } from './stack.ts';

/** The run's report.csv (through the library's `report`), one record a row, by column name. */
export async function reportOf(pb: PortraitBatch, runId: string): Promise<Record<string, string>[]> {
  const chunks: Buffer[] = [];
  for await (const c of await pb.report(runId)) chunks.push(c as Buffer);
  return parse(Buffer.concat(chunks), { columns: true, bom: true }) as Record<string, string>[];
}

/** A row's metadata as the store worker wrote it; undefined when there is none. */
export const meta = (t: TestStack, runId: string, key: string) => t.ctx.storage.getJson<RowMeta>(runLayout(t.ctx.cfg.S3_PREFIX, runId).meta(key));
