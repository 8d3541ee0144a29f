// The daemon's read-only doors: a root-only control socket for `uplinkd
// status`, and an HTTP listener (loopback by default) with a status page,
// /api/status and /metrics in Prometheus text format.

import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { dirname } from 'node:path';
import { Counter, Gauge, Registry } from 'prom-client';
import type { Logger } from './log.js';
import { formatStatus, type Status, type UplinkStatus } from './status.js';

export type StatusSource = () => Promise<Status>;

/** Serves one JSON status per connection: the client writes `status`, reads the JSON, done. */
export async function serveControlSocket(path: string, status: StatusSource, log: Logger): Promise<net.Server> {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // A socket file left by a daemon that died is stale: nobody can own it now,
  // since `run` refuses to start while another daemon answers (see cli.ts).
  rmSync(path, { force: true });
  const server = net.createServer((socket) => {
    socket.setEncoding('utf8');
    let request = '';
    socket.on('data', async (chunk: string) => {
      request += chunk;
      if (!request.includes('\n')) return;
      if (request.trim() === 'status') socket.end(JSON.stringify(await status()) + '\n');
      else socket.end(JSON.stringify({ error: `unknown request ${JSON.stringify(request.trim())}` }) + '\n');
    });
    socket.on('error', () => {});
  });
  // Created 0600 from the start: no window in which others could connect.
  const previous = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(path, resolve));
  } finally {
    process.umask(previous);
  }
  chmodSync(path, 0o600);
  log.debug({ socket: path }, `control socket ${path}`);
  return server;
}

/** Asks a running daemon for its status; undefined when none answers. */
export function requestStatus(path: string, timeoutMs = 2000): Promise<Status | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect(path);
    let reply = '';
    const done = (value: Status | undefined) => {
      socket.destroy();
      resolve(value);
    };
    socket.setTimeout(timeoutMs, () => done(undefined));
    socket.setEncoding('utf8');
    socket.on('connect', () => socket.write('status\n'));
    socket.on('data', (d: string) => (reply += d));
    socket.on('end', () => {
      try {
        done(JSON.parse(reply) as Status);
      } catch {
        done(undefined);
      }
    });
    socket.on('error', () => done(undefined));
  });
}

/** Prometheus metrics, filled from a fresh status at each scrape. */
export interface Metrics {
  registry: Registry;
  countTransition(uplink: string, to: string): void;
  countRestore(cause: string): void;
}

export function createMetrics(status: StatusSource): Metrics {
  const registry = new Registry();
  // prom-client collects all metrics of a scrape at once: they share one status.
  let scrape: Promise<Status> | undefined;
  const snapshot = () => (scrape ??= status().finally(() => (scrape = undefined)));
  const gauge = (name: string, help: string, value: (u: UplinkStatus) => number | null) =>
    new Gauge({
      name, help, labelNames: ['uplink'], registers: [registry],
      async collect() {
        for (const u of (await snapshot()).uplinks) {
          const v = value(u);
          if (v !== null) this.set({ uplink: u.name }, v);
        }
      },
    });
  gauge('uplinkd_uplink_up', '1 up, 0 down, -1 pending (no verdict yet)', (u) => (u.state === 'up' ? 1 : u.state === 'down' ? 0 : -1));
  gauge('uplinkd_probe_latency_seconds', 'mean probe round-trip time of the last round', (u) => (u.latency_ms === null ? null : u.latency_ms / 1000));
  gauge('uplinkd_probe_loss_ratio', 'lost fraction of the last `window` probes', (u) => u.loss);
  gauge('uplinkd_uplink_rx_bits_per_second', 'received rate of the uplink interface', (u) => u.rx_bps);
  gauge('uplinkd_uplink_tx_bits_per_second', 'sent rate of the uplink interface', (u) => u.tx_bps);
  gauge('uplinkd_uplink_share_ratio', 'fraction of new connections the uplink receives now', (u) => u.share);
  gauge('uplinkd_uplink_connections', 'tracked connections marked for the uplink', (u) => u.connections);
  const transitions = new Counter({ name: 'uplinkd_uplink_transitions_total', help: 'state changes', labelNames: ['uplink', 'to'], registers: [registry] });
  const restores = new Counter({
    name: 'uplinkd_restores_total', help: 'restores of kernel state that another program removed or changed, by what had changed',
    labelNames: ['cause'], registers: [registry],
  });
  new Gauge({
    name: 'uplinkd_last_restore_timestamp_seconds', help: 'when the last restore happened, labelled with its cause', labelNames: ['cause'],
    registers: [registry],
    async collect() {
      this.reset();
      const last = (await snapshot()).self_healing.last;
      if (last) this.set({ cause: last.cause }, Date.parse(last.at) / 1000);
    },
  });
  new Gauge({
    name: 'uplinkd_restore_backoff_seconds', help: 'current gap between restores while another program keeps changing the state (0: not backing off)',
    registers: [registry],
    async collect() {
      this.set(((await snapshot()).self_healing.backoff_ms) / 1000);
    },
  });
  return {
    registry,
    countTransition: (uplink, to) => transitions.inc({ uplink, to }),
    countRestore: (cause) => restores.inc({ cause }),
  };
}

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
