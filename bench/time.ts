// Figure 2: time against the baseline and against fal's limit (clean), and what each ends with when
// things go wrong (submit 5xx, lost requests, dropped webhooks, one SIGKILL mid-run).
import { COMPARISON_FAULTS, comparisonRun, extraPaid, GENERATION_MS, SLOTS, type ComparisonRun } from './lib/compare.ts';
import { runAlone, type Figure } from './lib/figure.ts';
import { round } from './lib/stats.ts';

export const figure: Figure = {
  id: 'time',
  title: '2. Time against the baseline and the limit; completeness under faults',
  method:
    "the service from `startRun` to the run's report written (its processes already up), the baseline from its first row to its last; both against their own emulator with C slots and a fixed generation time, at the same time. ideal = ceil(rows / C) × generation time (fal's slots are the limit). Fault runs: the same with 5% submit 5xx/429, 3% lost requests, 20% dropped webhooks, and one SIGKILL at half the rows — of the service's worker process (restarted at once), of the baseline script (rerun at once; it skips rows whose image is in S3). Completed rows are counted from S3 (the service's by `auditRun`); extra paid submissions = generations fal billed beyond one per completed row.",
  targets: [
    { key: 'idealRatio', label: 'ideal / service seconds, clean', test: (v) => v >= 0.95, text: '≥ 0.95' },
    { key: 'e2eRatio', label: 'baseline / service seconds, clean', test: (v) => v >= 1, text: '≥ 1 (not in the issue: faster than the baseline)' },
    { key: 'faultCompletedShare', label: 'service share of completable rows completed, faults', test: (v) => v === 1, text: '1' },
  ],
  async run(ctx) {
    const rows = ctx.quick ? 40 : 2000;
    const faultRows = ctx.quick ? 40 : 400;
    const clean = () => Promise.all([comparisonRun(ctx, 'webhook', rows, false), comparisonRun(ctx, 'baseline', rows, false)]);
    const faulty = () => Promise.all([comparisonRun(ctx, 'webhook', faultRows, true), comparisonRun(ctx, 'baseline', faultRows, true)]);
    // Quick: all four at once (they are bound by the emulators' slots, not by CPU); full: two at a time.
    const [[svc, base], [fsvc, fbase]] = ctx.quick ? await Promise.all([clean(), faulty()]) : [await clean(), await faulty()];
    const ideal = Math.ceil(rows / SLOTS) * (GENERATION_MS / 1000);
    const audit = fsvc.service!.audit!;
    const row = (name: string, r: ComparisonRun, extra: string) => `| ${name} | ${r.rows} | ${round(r.seconds, 1)} | ${r.completed} | ${extra} |`;
    const table = [
      `Clean (ideal ${ideal} s):`,
      '',
      '| client | rows | seconds | completed | ideal / seconds |',
      '| --- | ---: | ---: | ---: | ---: |',
      row('service (webhooks)', svc, String(round(ideal / svc.seconds, 3))),
      row('baseline', base, String(round(ideal / base.seconds, 3))),
      '',
      'With faults:',
      '',
      '| client | rows | seconds | completed | share completed | extra paid submissions | submits refused (5xx/429) | requests lost by fal | kills |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      `| service | ${fsvc.rows} | ${round(fsvc.seconds, 1)} | ${fsvc.completed} | ${round(fsvc.completed / fsvc.rows, 4)} | ${extraPaid(fsvc)} (audit: ${audit.extraSubmits} extra, ${audit.lost} lost, ${audit.duplicated} duplicated) | ${fsvc.calls.rejectedByFault} | ${fsvc.calls.lost} | ${fsvc.kills} |`,
      `| baseline | ${fbase.rows} | ${round(fbase.seconds, 1)} | ${fbase.completed} | ${round(fbase.completed / fbase.rows, 4)} | ${extraPaid(fbase)} | ${fbase.calls.rejectedByFault} | ${fbase.calls.lost} | ${fbase.kills} |`,
    ].join('\n');
    return {
      json: {
        e2eRatio: round(base.seconds / svc.seconds, 3),
        idealRatio: round(ideal / svc.seconds, 3),
        faultCompletedShare: round(fsvc.completed / fsvc.rows, 4),
        baselineFaultCompletedShare: round(fbase.completed / fbase.rows, 4),
        baselineExtraSubmits: extraPaid(fbase),
      },
      table,
      setup: `clean: ${rows} rows, ${SLOTS} slots, ${GENERATION_MS / 1000} s generation; faults: ${faultRows} rows, ${JSON.stringify(COMPARISON_FAULTS)}; service FAL_CONCURRENCY=SUBMIT_CONCURRENCY=STORE_CONCURRENCY=${SLOTS}, with faults RECONCILE_GRACE_MS=${3 * GENERATION_MS}, RECONCILE_INTERVAL_MS=1000, JOB_LOCK_MS=5000; baseline p-limit(${SLOTS}).`,
      notes: [`Service fault run: ${fsvc.calls.webhooksDropped} webhooks dropped, ${fsvc.calls.statusCalls} status polls by the reconciler, ${fsvc.calls.submits} submits for ${fsvc.rows} rows.`],
    };
  },
};

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
