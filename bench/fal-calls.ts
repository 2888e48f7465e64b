// Figure 1: fal calls per stored image — the service with webhooks, the service polling, and the
// baseline script (p-limit around fal.subscribe), each against an emulator of its own.
import { callsPerImage, comparisonRun, GENERATION_MS, SLOTS, type ComparisonRun } from './lib/compare.ts';
import { runAlone, type Figure } from './lib/figure.ts';
import { HAS_POLL_MODE } from './lib/runs.ts';
import { round } from './lib/stats.ts';

export const figure: Figure = {
  id: 'fal-calls',
  title: '1. fal calls per image',
  method:
    'every HTTP call a client makes to fal (submit, status, result, cancel, file GETs, storage uploads) as counted by the emulator (its own process), divided by the images stored in S3. The service (webhook receiver and worker in their own processes) and the baseline run at the same time, each against its own emulator.',
  targets: [
    { key: 'falCallsPerImage', label: 'fal calls per image, webhooks', test: (v) => v <= 2.05, text: '≤ 2.05' },
    { key: 'pollCallsPerImage', label: 'fal calls per image, polling', test: (v) => v <= 4, text: '≤ 4' },
  ],
  async run(ctx) {
    const rows = ctx.quick ? 40 : 200;
    const modes = HAS_POLL_MODE ? (['webhook', 'poll', 'baseline'] as const) : (['webhook', 'baseline'] as const);
    // Polling is measured twice: on a fresh Redis (the first run a service ever makes: nothing learned
    // of fal's timing) and after one unmeasured wave of SLOTS rows on the same Redis (a service that has
    // run before, as in production). The second is the figure; the first is shown beside it.
    const [runs, warmed] = await Promise.all([
      Promise.all(modes.map((m) => comparisonRun(ctx, m, rows, false))),
      HAS_POLL_MODE ? comparisonRun(ctx, 'poll', rows, false, SLOTS) : undefined,
    ]);
    const by = (m: string) => runs.find((r) => r.mode === m);
    const row = (name: string, r: ComparisonRun | undefined) =>
      r
        ? `| ${name} | ${r.completed}/${r.rows} | ${r.calls.submits} | ${r.calls.statusCalls} | ${r.calls.resultCalls} | ${r.calls.cancelCalls} | ${r.calls.fileGets} | ${r.calls.storageInitiates + r.calls.storageUploads} | **${round(callsPerImage(r))}** | ${round(r.seconds, 1)} |`
        : `| ${name} | not measured: poll mode (RESULT_DELIVERY=poll) is not in this checkout | | | | | | | | |`;
    const table = [
      '| client | images stored | submit | status | result | cancel | file GETs | storage | calls / image | seconds |',
      '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
      row('service, webhooks', by('webhook')),
      row(`service, polling, after a run of ${SLOTS} rows`, warmed),
      row('service, polling, first run on a fresh Redis', by('poll')),
      row('baseline (p-limit + fal.subscribe)', by('baseline')),
    ].join('\n');
    return {
      json: {
        falCallsPerImage: round(callsPerImage(by('webhook')!), 3),
        pollCallsPerImage: warmed ? round(callsPerImage(warmed), 3) : null,
        baselineCallsPerImage: round(callsPerImage(by('baseline')!), 3),
      },
      table,
      setup: `${rows} rows of one 64×64 face, ${SLOTS} fal slots, ${GENERATION_MS / 1000} s generation; service FAL_CONCURRENCY=SUBMIT_CONCURRENCY=STORE_CONCURRENCY=${SLOTS}; polling measured on a fresh Redis and, as \`pollCallsPerImage\`, after an unmeasured run of ${SLOTS} rows on the same Redis and processes; baseline p-limit(${SLOTS}), the client's default 500 ms status polling.`,
      notes: HAS_POLL_MODE ? [] : ['Poll mode is not in this checkout yet: `pollCallsPerImage` is null until it lands.'],
    };
  },
};

if (import.meta.url === `file://${process.argv[1]}`) await runAlone(figure);
