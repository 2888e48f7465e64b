// A run's outputs for people: its report.csv, and everything under the run (images, report, summary,
// manifest copy, uploaded faces) copied into a folder with a contact sheet.
import type { Readable } from 'node:stream';
import type { Context } from '../core/context.ts';
import { runLayout } from '../core/layout.ts';
import { copyRunToDir, writeContactSheet } from '../local/contactSheet.ts';
import { RunControlError } from './errors.ts';

export async function reportOf(ctx: Context, runId: string): Promise<Readable> {
  const run = await ctx.rows.getRun(runId);
  if (!run) throw new RunControlError(`no run ${runId}`);
  if (!run.finishedAt) throw new RunControlError(`run ${runId} has no report yet: it is still ${run.state}`);
  return ctx.storage.getStream(runLayout(ctx.cfg.S3_PREFIX, runId).report);
}

export interface DownloadResult {
  runId: string;
  dir: string;
  files: number;
  /** Keys under the run that name no file inside dir (`..`, absolute…): not written, each with its reason. */
  refused: { key: string; reason: string }[];
  contactSheet: string;
}

export async function downloadRun(ctx: Context, runId: string, dir: string): Promise<DownloadResult> {
  const run = await ctx.rows.getRun(runId);
  if (!run) throw new RunControlError(`no run ${runId}`);
  if (!run.finishedAt) throw new RunControlError(`run ${runId} is still ${run.state}: download it once it has finished`);
  const prefix = runLayout(ctx.cfg.S3_PREFIX, runId).base;
  const { files, refused } = await copyRunToDir(ctx.storage, prefix, dir);
  for (const r of refused) ctx.logger.warn({ runId, key: r.key }, `download: ${r.reason}`);
  const contactSheet = await writeContactSheet(dir, prefix, `portrait-batch run ${runId}`);
  return { runId, dir, files, refused, contactSheet };
}
