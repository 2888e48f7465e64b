// The admin listener every long-running process opens (webhook, worker, scheduler, demo): /metrics
// for Prometheus, /healthz and /readyz for the orchestrator, and the dashboard under /ui when
// DASHBOARD_TOKEN is set. On ADMIN_HOST:ADMIN_PORT (loopback by default), never the public webhook port.
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { collectDefaultMetrics } from 'prom-client';
import { ConfigError, DASHBOARD_TOKEN_MIN } from '../core/config.ts';
import { listenError } from '../core/reachability.ts';
import type { AdminOptions, PortraitBatch, RunningAdmin } from '../portraitBatch.ts';
import { allowedAdminHosts, requireAllowedHost } from './allowedHosts.ts';
import { dashboardRouter } from './dashboard/index.ts';
import { readiness } from './health.ts';

const registriesWithProcessMetrics = new WeakSet<object>();

export async function startAdminServer(pb: PortraitBatch, opts: AdminOptions = {}): Promise<RunningAdmin> {
  const cfg = pb.config;
  const port = opts.port ?? cfg.ADMIN_PORT;
  const host = opts.host ?? cfg.ADMIN_HOST;
  const token = opts.dashboardToken ?? cfg.DASHBOARD_TOKEN;
  // The same rule as the variable's, for a token handed in directly (the embedded stack's).
  if (token && token.length < DASHBOARD_TOKEN_MIN) throw new ConfigError([`DASHBOARD_TOKEN: must be at least ${DASHBOARD_TOKEN_MIN} characters (e.g. \`openssl rand -hex 24\`)`]);
  const ctx = pb.context;
  const registry = ctx.metrics.registry;
  if (!registriesWithProcessMetrics.has(registry)) {
    collectDefaultMetrics({ register: registry });
    registriesWithProcessMetrics.add(registry);
  }
  const started = Date.now();
  let stopping = false;

  const app = express();
  app.disable('x-powered-by');
  // TRUST_PROXY: whose X-Forwarded-For/-Proto to believe (req.ip, req.secure); nobody's by default.
  app.set('trust proxy', cfg.TRUST_PROXY);
  const allowedHosts = allowedAdminHosts(cfg.ADMIN_ALLOWED_HOSTS, host);
  app.use(requireAllowedHost(allowedHosts));
  app.get('/healthz', (_req, res) => {
    res.status(stopping ? 503 : 200).json({ ok: !stopping, role: opts.role ?? 'portrait-batch', uptimeSeconds: Math.round((Date.now() - started) / 1000), ...(stopping ? { stopping: true } : {}) });
  });
  app.get('/readyz', async (_req, res) => {
    const r = await readiness(ctx);
    if (stopping) r.down.push('shutting down');
    const ready = r.ready && !stopping;
    res.status(ready ? 200 : 503).json({ ready, down: r.down, checks: r.checks });
  });
  app.get('/metrics', async (_req, res) => {
    res.type(registry.contentType).send(await registry.metrics());
  });
  if (token) app.use('/ui', dashboardRouter(pb, token));
  else app.use('/ui', (_req, res) => void res.status(404).type('text/plain').send('the dashboard is off: set DASHBOARD_TOKEN to turn it on\n'));
  app.get('/', (_req, res) => void res.redirect(token ? '/ui' : '/healthz'));
  app.use((_req, res) => void res.status(404).type('text/plain').send('not found: /metrics, /healthz, /readyz and /ui are served here\n'));

  const server = await new Promise<Server>((resolve, reject) => {
    // Express 5 hands a listen error (a port in use) to this callback; it becomes one sentence.
    const s = app.listen(port, host, (err?: Error) => (err ? reject(listenError(err, 'ADMIN_PORT; 0 picks a free one', port, host)) : resolve(s)));
  });
  const actual = (server.address() as AddressInfo).port;
  const urlHost = host.includes(':') ? `[${host}]` : host === '0.0.0.0' ? '127.0.0.1' : host;
  ctx.logger.info({ port: actual, host, dashboard: Boolean(token) }, `admin listener on http://${urlHost}:${actual} (/metrics /healthz /readyz${token ? ' /ui' : ''})`);
  return {
    server,
    port: actual,
    host,
    url: `http://${urlHost}:${actual}`,
    dashboard: Boolean(token),
    draining() {
      stopping = true;
    },
    close: () =>
      new Promise<void>((resolve) => {
        stopping = true;
        server.close(() => resolve());
        // Browsers keep connections open between polls; an idle one must not hold the process up.
        server.closeIdleConnections();
      }),
  };
}
