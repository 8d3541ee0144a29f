// The read-only HTTP listener (loopback by default): the status page and its
// assets, /api/status, /api/history and /metrics in Prometheus text format
// (README "Status page").

import { readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Registry } from 'prom-client';
import type { Logger } from '../log.js';
import type { HistoryJson } from './history.js';
import type { StatusSource } from './socket.js';
import { formatStatus } from './status.js';

/** Where the build puts the page and the vendored chart library (scripts/vendor-page.mjs). */
export const PAGE_DIR = fileURLToPath(new URL('./page/', import.meta.url));

/** The page's files, by the path they are served at. Nothing else under the page directory is served. */
const PAGE_FILES: Record<string, { file: string; type: string }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/page.js': { file: 'page.js', type: 'text/javascript; charset=utf-8' },
  '/page.css': { file: 'page.css', type: 'text/css; charset=utf-8' },
  '/vendor/uPlot.iife.min.js': { file: 'vendor/uPlot.iife.min.js', type: 'text/javascript; charset=utf-8' },
  '/vendor/uPlot.min.css': { file: 'vendor/uPlot.min.css', type: 'text/css; charset=utf-8' },
};

export interface HttpSources {
  status: StatusSource;
  history: () => HistoryJson;
  registry: Registry;
  /** Tests serve a page directory of their own. */
  pageDir?: string;
}

export async function serveHttp(listen: string, sources: HttpSources, log: Logger): Promise<http.Server> {
  const at = listen.lastIndexOf(':');
  const host = listen.slice(0, at);
  const port = Number(listen.slice(at + 1));
  // Read once: the page is part of the installed program and does not change under it.
  const page = new Map(Object.entries(PAGE_FILES).map(([path, { file, type }]) => [path, { type, body: readFileSync(join(sources.pageDir ?? PAGE_DIR, file)) }]));
  const server = http.createServer(async (req, res) => {
    const send = (code: number, type: string, body: string | Buffer) =>
      res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' }).end(body);
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') return send(405, 'text/plain', 'read-only\n');
      const path = new URL(req.url ?? '/', 'http://x').pathname;
      if (path === '/api/status') return send(200, 'application/json', JSON.stringify(await sources.status()) + '\n');
      if (path === '/api/history') return send(200, 'application/json', JSON.stringify(sources.history()) + '\n');
      if (path === '/metrics') return send(200, sources.registry.contentType, await sources.registry.metrics());
      // The table `uplinkd status` prints, for curl.
      if (path === '/status.txt') return send(200, 'text/plain; charset=utf-8', formatStatus(await sources.status(), 20));
      const file = page.get(path);
      if (file) return send(200, file.type, file.body);
      return send(404, 'text/plain', 'not found\n');
    } catch (err) {
      send(500, 'text/plain', `${err instanceof Error ? err.message : err}\n`);
    }
  });
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, host, resolve));
  log.debug({ http: listen }, `http on ${listen}`);
  return server;
}
