// A fault-injecting HTTP proxy: forwards to a target, but answers a share of matching requests with
// a transient error instead (used in front of the embedded S3 server for the chaos run).
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';

export interface FaultProxyOptions {
  target: string;
  /** Share of matching requests answered with 503/500 without reaching the target. */
  failureRate: number;
  /** Which methods faults apply to (default PUT and POST: writes). */
  methods?: string[];
  /** Hold the upstream's answer to matching requests this long (e.g. a submit answered late). */
  responseDelayMs?: number;
  random?: () => number;
  /** Port to listen on (default: a free one). */
  port?: number;
}

export interface RunningFaultProxy {
  url: string;
  injected(): number;
  setFailureRate(rate: number): void;
  /** Stops listening and cuts every connection (the server is down: connections are refused), until resume(). */
  pause(): Promise<void>;
  /** Listens again on the same port. */
  resume(): Promise<void>;
  close(): Promise<void>;
}

export async function startFaultProxy(opts: FaultProxyOptions): Promise<RunningFaultProxy> {
  const target = new URL(opts.target);
  const methods = new Set(opts.methods ?? ['PUT', 'POST']);
  const random = opts.random ?? Math.random;
  let rate = opts.failureRate;
  let injected = 0;
  const server: Server = createServer((req, res) => {
    if (methods.has(req.method ?? '') && random() < rate) {
      injected++;
      req.resume();
      const status = random() < 0.5 ? 503 : 500;
      res.writeHead(status, { 'content-type': 'application/xml' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?><Error><Code>${status === 503 ? 'SlowDown' : 'InternalError'}</Code><Message>injected fault</Message></Error>`);
      return;
    }
    const upstream = request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        const forward = () => {
          res.writeHead(up.statusCode ?? 502, up.headers);
          // pipeline, not pipe: an upstream that breaks mid-answer cuts this answer off instead of
          // emitting an error nobody listens to.
          pipeline(up, res).catch(() => undefined);
        };
        if (opts.responseDelayMs && methods.has(req.method ?? '')) setTimeout(forward, opts.responseDelayMs);
        else forward();
      },
    );
    const broken = () => {
      if (res.headersSent) res.destroy();
      else res.writeHead(502).end();
    };
    // The request can still fail after its body is sent (while waiting for the answer).
    upstream.on('error', broken);
    pipeline(req, upstream).catch(broken);
  });
  await new Promise<void>((resolve) => server.listen(opts.port ?? 0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const stop = () =>
    new Promise<void>((resolve) => {
      if (!server.listening) return resolve();
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return {
    url: `http://127.0.0.1:${port}`,
    pause: stop,
    resume: () => new Promise<void>((resolve, reject) => {
      if (server.listening) return resolve();
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    }),
    injected: () => injected,
    setFailureRate: (r) => {
      rate = r;
    },
    close: stop,
  };
}
