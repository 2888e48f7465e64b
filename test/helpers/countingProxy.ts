// An HTTP proxy in front of a server (the embedded S3) that counts what it answers: requests and body
// bytes. Headers are passed on as they are, so S3 signatures made for the proxy's address still verify.
import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pipeline } from 'node:stream/promises';

export interface CountingProxy {
  url: string;
  /** Body bytes answered since the last reset. */
  bytes(): number;
  /** `METHOD path [range]` of each request since the last reset. */
  requests(): string[];
  reset(): void;
  close(): Promise<void>;
}

export async function startCountingProxy(targetUrl: string): Promise<CountingProxy> {
  const target = new URL(targetUrl);
  let bytes = 0;
  let seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}${req.headers.range ? ` ${req.headers.range}` : ''}`);
    const upstream = request({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.on('data', (c: Buffer) => (bytes += c.length));
      pipeline(up, res).catch(() => undefined);
    });
    upstream.on('error', () => (res.headersSent ? res.destroy() : res.writeHead(502).end()));
    pipeline(req, upstream).catch(() => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    bytes: () => bytes,
    requests: () => [...seen],
    reset() {
      bytes = 0;
      seen = [];
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
