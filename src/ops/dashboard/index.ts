// The dashboard under /ui of the admin listener: an Express router over the library handle. Pages are
// rendered on the server; a small script polls JSON for live progress. Every request is signed in
// (see auth.ts); every value is escaped (see html.ts); pictures are served from here (thumbnails.ts).
import { DEPENDENCY_NAMES } from '../../core/dependencies.ts';
import { readFileSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import express, { type Request, type Response, type Router } from 'express';
import { RunControlError } from '../../control/errors.ts';
import type { PortraitBatch } from '../../portraitBatch.ts';
import type { RunStatus } from '../../status.ts';
import { QUEUE_STATES, withTimeout } from '../metrics.ts';
import { dashboardAuth, derive } from './auth.ts';
import { sessionStore } from './sessions.ts';
import { signInThrottle } from './signInThrottle.ts';
import { liveFields, loginPage, messagePage, runPage, runsPage, STATUS_FILTERS, type GalleryRow, type QueueHealth } from './pages.ts';
import { rowsPage } from './rows.ts';
import { thumbnails } from './thumbnails.ts';

const PAGE_SIZE = 24;
/** Runs listed on the front page. */
const RUNS_SHOWN = 50;
const QUEUE_TIMEOUT_MS = 1500;

const asset = (name: string) => readFileSync(new URL(`./assets/${name}`, import.meta.url), 'utf8');
const ASSETS: Record<string, { type: string; body: string }> = {
  'app.css': { type: 'text/css; charset=utf-8', body: asset('app.css') },
  'app.js': { type: 'text/javascript; charset=utf-8', body: asset('app.js') },
};

/** No script but ours, no framing (inline styles only carry the progress bars' widths); pictures only from here (faces and portraits are served by this router). */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export function dashboardRouter(pb: PortraitBatch, token: string): Router {
  const ctx = () => pb.context;
  const { redis, policy, logger } = pb.context;
  const auth = dashboardAuth(token, {
    sessions: sessionStore(redis, derive(token, 'session'), policy.dashboard.sessionSeconds),
    throttle: signInThrottle(redis, policy.dashboard, logger),
    sessionSeconds: policy.dashboard.sessionSeconds,
  });
  const pictures = thumbnails(derive(token, 'thumbnails'));
  const router = express.Router();

  router.use((_req, res, next) => {
    res.set({
      'Content-Security-Policy': CSP,
      'X-Content-Type-Options': 'nosniff',
      'X-Frame-Options': 'DENY',
      'Referrer-Policy': 'no-referrer',
      'Cache-Control': 'no-store',
    });
    next();
  });
  router.use(express.urlencoded({ extended: false, limit: '4kb' }));

  router.get('/assets/:name', (req, res) => {
    const a = ASSETS[req.params.name];
    if (!a) return void res.status(404).type('text/plain').send('not found\n');
    res.type(a.type).send(a.body);
  });
  router.get('/login', (_req, res) => void res.type('html').send(loginPage()));
  router.post('/login', async (req, res) => {
    const refused = auth.checkOrigin(req);
    if (refused) return void res.status(403).type('html').send(loginPage(refused));
    if (await auth.login(req, res, (status, message) => void res.status(status).type('html').send(loginPage(message)))) res.redirect(303, '/ui');
  });

  router.use(
    auth.require((req, res) => {
      const browser = req.method === 'GET' && (req.headers.accept ?? '').includes('text/html');
      if (browser) return void res.status(401).type('html').send(loginPage());
      res.status(401).set('WWW-Authenticate', 'Bearer realm="portrait-batch dashboard"').type('text/plain').send('sign in: send DASHBOARD_TOKEN as a bearer token, or use /ui/login\n');
    }),
  );

  router.post('/logout', async (req, res) => {
    const refused = auth.checkPost(req);
    if (refused) return void res.status(403).type('html').send(messagePage('Refused', refused, '/ui'));
    await auth.signOut(req, res);
    res.redirect(303, '/ui/login');
  });

  const statuses = async (): Promise<RunStatus[]> => {
    const ids = (await ctx().rows.runIds(RUNS_SHOWN)) ?? [];
    return (await Promise.all(ids.map((id) => pb.status(id)))).filter((s): s is RunStatus => s !== undefined);
  };

  router.get('/', async (_req, res) => {
    const [runs, queues] = await Promise.all([statuses(), queueHealth(pb)]);
    res.type('html').send(runsPage(runs, queues, auth.csrf));
  });
  router.get('/runs.json', async (_req, res) => void res.json({ runs: (await statuses()).map(liveFields) }));

  router.get('/runs/:runId', async (req, res) => {
    const runId = req.params.runId as string;
    const [status, run] = await Promise.all([pb.status(runId), ctx().rows.getRun(runId)]);
    if (!status || !run) return void res.status(404).type('html').send(messagePage('No such run', `There is no run ${runId}.`, '/ui'));
    const filter = typeof req.query.status === 'string' && (STATUS_FILTERS as readonly string[]).includes(req.query.status) ? req.query.status : undefined;
    const pageNo = Math.max(1, Math.min(1_000_000, Number.parseInt(String(req.query.page ?? '1'), 10) || 1));
    const rows = await rowsPage(ctx(), run, { status: filter, page: pageNo, pageSize: PAGE_SIZE });
    const gallery: GalleryRow[] = rows.rows.map((r) => ({
      ...r,
      face: pictures.faceSrc(ctx(), run, r),
      portraits: r.images.map((k) => pictures.portraitSrc(ctx(), run, k)).filter((src): src is string => src !== undefined),
    }));
    const notice = typeof req.query.done === 'string' ? NOTICES[req.query.done] : undefined;
    res.type('html').send(runPage({ status, rows, gallery, filter, page: pageNo, pageSize: PAGE_SIZE, csrf: auth.csrf, notice }));
  });
  router.get('/runs/:runId/faces/:rowKey', async (req, res) => {
    const run = await ctx().rows.getRun(req.params.runId as string);
    if (!run) return void res.status(404).type('text/plain').send('no such run\n');
    await pictures.sendFace(ctx(), run, req.params.rowKey as string, req.query.src, req.query.sig, res);
  });
  router.get('/runs/:runId/images/*rest', async (req, res) => {
    const run = await ctx().rows.getRun(req.params.runId as string);
    if (!run) return void res.status(404).type('text/plain').send('no such run\n');
    const rest = (req.params as unknown as { rest: string[] }).rest.join('/');
    await pictures.sendPortrait(ctx(), run, rest, res);
  });
  router.get('/runs/:runId/status.json', async (req, res) => {
    const s = await pb.status(req.params.runId as string);
    if (!s) return void res.status(404).json({ error: `no run ${req.params.runId}` });
    res.json(liveFields(s));
  });
  router.get('/runs/:runId/report.csv', async (req, res) => {
    const runId = req.params.runId as string;
    const csv = await pb.report(runId);
    res.type('text/csv').attachment(`report-${runId}.csv`);
    // pipeline destroys both ends on an error (a dropped S3 read): the browser sees a cut download and
    // nothing is left open; there is no status left to send once the body has started.
    await pipeline(csv, res).catch(() => undefined);
  });

  router.post('/runs/:runId/cancel', async (req, res) => {
    const runId = req.params.runId as string;
    const refused = auth.checkPost(req);
    if (refused) return void res.status(403).type('html').send(messagePage('Refused', refused, `/ui/runs/${encodeURIComponent(runId)}`));
    const r = await pb.cancelRun(runId);
    res.redirect(303, `/ui/runs/${encodeURIComponent(runId)}?done=${r.outcome === 'finished' ? 'already-finished' : 'canceled'}`);
  });
  router.post('/runs/:runId/retry', async (req, res) => {
    const runId = req.params.runId as string;
    const refused = auth.checkPost(req);
    if (refused) return void res.status(403).type('html').send(messagePage('Refused', refused, `/ui/runs/${encodeURIComponent(runId)}`));
    const r = await pb.retryFailed(runId);
    res.redirect(303, `/ui/runs/${encodeURIComponent(r.runId)}?done=retry-started`);
  });

  router.use((_req, res) => void res.status(404).type('html').send(messagePage('Not found', 'There is no such page.', '/ui')));
  // Bad requests (an unknown run, a run that cannot be retried) as one sentence; nothing else leaks.
  router.use((err: unknown, _req: Request, res: Response, next: (e?: unknown) => void) => {
    if (res.headersSent) return next(err);
    if (err instanceof RunControlError) return void res.status(409).type('html').send(messagePage('Not possible', err.message, '/ui'));
    ctx().logger.error({ err: err instanceof Error ? err.message : String(err) }, 'dashboard error');
    // Redis down: this process's own view is all there is to say.
    const outages = ctx().dependencies.local().map((o) => `${DEPENDENCY_NAMES[o.dependency]} unreachable since ${new Date(o.since).toISOString()} (${o.reason})`);
    res.status(500).type('html').send(messagePage('Error', `The dashboard could not answer this request${outages.length ? `: ${outages.join('; ')}` : '; see the process log'}.`, '/ui'));
  });
  return router;
}

const NOTICES: Record<string, string> = {
  canceled: 'Run canceled: nothing more is submitted; rows in flight end canceled.',
  'already-finished': 'The run had already finished; nothing changed.',
  'retry-started': 'A new run of the failed rows was started.',
};

/** Job counts and workers per BullMQ queue, or none when Redis does not answer in time. */
export async function queueHealth(pb: PortraitBatch): Promise<QueueHealth[]> {
  const q = pb.context.queues;
  const queues = [q.produce, q.submit, q.results, q.control];
  const res = await withTimeout(
    Promise.all(
      queues.map(async (queue) => ({
        name: queue.name,
        counts: (await queue.getJobCounts(...QUEUE_STATES)) as Record<string, number>,
        paused: await queue.isPaused(),
        workers: await queue.getWorkersCount().catch(() => null),
      })),
    ),
    QUEUE_TIMEOUT_MS,
  );
  return res ?? [];
}
