// A TCP proxy in front of a redis-server that can cut a client's connection right after Redis answered
// a chosen command, before the answer reaches the client: the command ran, the client never heard.
// That is what a Redis killed between its fsync and its reply does; ioredis then sends the command
// again on its next connection (autoResendUnfulfilledCommands).
import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface ReplyCut {
  url: string;
  /** The next command whose bytes contain `marker` runs, and its client's connection is cut before the reply. */
  cutReplyOf(marker: string): Promise<void>;
  close(): Promise<void>;
}

export async function startReplyCut(targetUrl: string): Promise<ReplyCut> {
  const target = new URL(targetUrl);
  let marker: string | undefined;
  let cut: (() => void) | undefined;
  const sockets = new Set<Socket>();
  const server: Server = createServer((client) => {
    const upstream = connect(Number(target.port), target.hostname);
    sockets.add(client).add(upstream);
    let cutting = false;
    client.on('data', (chunk: Buffer) => {
      if (marker && chunk.includes(marker)) {
        marker = undefined;
        cutting = true;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!cutting) return void client.write(chunk);
      // The command was answered (one command in flight on this connection): drop the answer and the connection.
      client.destroy();
      upstream.destroy();
      cut?.();
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('close', end).on('error', end);
    upstream.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
    cutReplyOf(m) {
      marker = m;
      return new Promise<void>((resolve) => (cut = resolve));
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
