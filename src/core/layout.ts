// Where everything lives in S3, under S3_PREFIX. One place, so the writer, the report, the demo and
// the checks agree.
export function runLayout(prefix: string, runId: string) {
  const base = `${prefix}runs/${runId}/`;
  return {
    base,
    /** n counts from 0 in the order fal returned the images. */
    image: (rowKey: string, n: number, ext: string) => `${base}images/${rowKey}/${n}.${ext}`,
    imagesOf: (rowKey: string) => `${base}images/${rowKey}/`,
    meta: (rowKey: string) => `${base}meta/${rowKey}.json`,
    report: `${base}report.csv`,
    /** Report lines of finished rows, batched while the run goes (named by their first line); removed once the report is written. */
    reportParts: `${base}report-parts/`,
    reportPart: (firstLine: number, id: string) => `${base}report-parts/${String(firstLine).padStart(10, '0')}-${id}.jsonl`,
    /** Rejected rows' report lines, gzipped, written by the producer; named by their first line only, so a replayed batch rewrites its own part. */
    rejectedPart: (firstLine: number) => `${base}report-parts/${String(firstLine).padStart(10, '0')}-rejected.jsonl.gz`,
    summary: `${base}summary.json`,
    /** Where each report line is, by status, and the failures by reason: a dashboard page reads only its rows (worker/reportIndex.ts). */
    reportIndex: `${base}report-index/`,
    /** A copy of the manifest as submitted: the report is built from it, so any worker can finish a run. */
    manifest: `${base}manifest.csv`,
    /** Local faces named by path in the manifest, uploaded so fal can fetch them through a presigned URL. */
    input: (rowKey: string, ext: string) => `${base}inputs/${rowKey}${ext}`,
    /** Local faces refused where the run was started (face cell → reason), so workers elsewhere judge them alike. */
    localFaces: `${base}local-faces.json`,
    /** A result payload too large for a Redis job (sync_mode images inline), until its result job is done. */
    stagedResult: (jobId: string) => `${base}staging/${jobId}.json`,
  };
}
export type RunLayout = ReturnType<typeof runLayout>;
