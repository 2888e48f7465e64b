// A hostile stand-in for fal's CDN, on loopback in front of the emulator: the emulator is started
// with this server as its public URL, so queue calls and result file URLs all come here. Everything
// is forwarded, except GETs of result files with an extension a test chose: those get the real file
// from the emulator and answer it the test's way (stall, lie about the type, send too much).
import { request, createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

export interface ResultFile {
  /** The file name's extension: the row's output_format (png, jpeg, webp). */
  ext: string;
  body: Buffer;
  contentType: string;
}

export type Answer = (file: ResultFile, res: ServerResponse) => void | Promise<void>;

export interface HostileCdn {
  url: string;
  /** Where the emulator really listens. */
  forwardTo(port: number): void;
  /** Answer result files of this extension the test's way. */
  answer(ext: string, how: Answer): void;
  /** GETs of result files by extension. */
  gets(ext: string): number;
  close(): Promise<void>;
}

export async function startHostileCdn(): Promise<HostileCdn> {
  let target = 0;
  const answers = new Map<string, Answer>();
  const gets = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const file = /^\/files\/[^/]+\/[^/]+\.(\w+)$/.exec(req.url ?? '');
    if (req.method === 'GET' && file) {
      const ext = file[1]!;
      gets.set(ext, (gets.get(ext) ?? 0) + 1);
      const how = answers.get(ext);
      if (how) {
        void fetchFromEmulator(target, req.url!).then(
          (real) => how({ ext, ...real }, res),
          () => res.writeHead(502).end(),
        );
        return;
      }
    }
    forward(target, req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    forwardTo: (port) => {
      target = port;
    },
    answer: (ext, how) => void answers.set(ext, how),
    gets: (ext) => gets.get(ext) ?? 0,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function forward(port: number, req: IncomingMessage, res: ServerResponse): void {
  const upstream = request({ host: '127.0.0.1', port, method: req.method, path: req.url, headers: req.headers }, (up) => {
    res.writeHead(up.statusCode ?? 502, up.headers);
    pipeline(up, res).catch(() => undefined);
  });
  const broken = () => (res.headersSent ? res.destroy() : res.writeHead(502).end());
  upstream.on('error', broken);
  pipeline(req, upstream).catch(broken);
}

async function fetchFromEmulator(port: number, path: string): Promise<{ body: Buffer; contentType: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  if (!res.ok) throw new Error(`emulator answered ${res.status}`);
  return { body: Buffer.from(await res.arrayBuffer()), contentType: res.headers.get('content-type') ?? '' };
}

/** Headers and half the body, then nothing: the connection stays open until the client gives up. */
export const stallHalfway: Answer = (file, res) => {
  res.writeHead(200, { 'content-type': file.contentType, 'content-length': file.body.length });
  res.write(file.body.subarray(0, file.body.length >> 1));
};

/** The real image's first bytes, then zeros up to `total` bytes, with no Content-Length to warn the client. */
export const sendBytes =
  (total: number): Answer =>
  async (file, res) => {
    res.writeHead(200, { 'content-type': file.contentType });
    async function* body() {
      yield file.body.subarray(0, 64);
      const zeros = Buffer.alloc(64 * 1024);
      for (let sent = 64; sent < total; sent += zeros.length) yield zeros;
    }
    await pipeline(Readable.from(body()), res).catch(() => undefined);
  };
