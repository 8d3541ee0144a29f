// The read-only HTTP listener (loopback by default): a status page,
// /api/status and /metrics in Prometheus text format.

import http from 'node:http';
import type { Registry } from 'prom-client';
import type { Logger } from '../log.js';
import type { StatusSource } from './socket.js';
import { formatStatus } from './status.js';

export async function serveHttp(listen: string, status: StatusSource, registry: Registry, log: Logger): Promise<http.Server> {
  const at = listen.lastIndexOf(':');
  const host = listen.slice(0, at);
  const port = Number(listen.slice(at + 1));
  const server = http.createServer(async (req, res) => {
    const send = (code: number, type: string, body: string) => res.writeHead(code, { 'content-type': type }).end(body);
    try {
      if (req.method !== 'GET') return send(405, 'text/plain', 'read-only\n');
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/api/status') return send(200, 'application/json', JSON.stringify(await status()) + '\n');
      if (path === '/metrics') return send(200, registry.contentType, await registry.metrics());
      if (path === '/') return send(200, 'text/plain; charset=utf-8', formatStatus(await status(), 20));
      return send(404, 'text/plain', 'not found\n');
    } catch (err) {
      send(500, 'text/plain', `${err instanceof Error ? err.message : err}\n`);
    }
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, resolve));
  log.debug({ http: listen }, `http on ${listen}`);
  return server;
}
