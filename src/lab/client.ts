// client: opens many NEW connections to a whoami server and tallies which
// source address the server saw for each, i.e. which uplink each used.
//
//   client http --url http://192.0.2.10:8080/ --count 400 [--sources a,b,c]
//               [--concurrency 8] [--timeout-ms 2000]
//   client udp  --host 192.0.2.10 --port 8080 --count 400 [--sport P]
//               [--sources a,b,c] [--concurrency 8] [--timeout-ms 2000]
//   client stream --url http://192.0.2.10:8080/ --every-ms 10 --duration-ms N
//               [--sources a,b] [--timeout-ms 1000]
//
// --dst ADDR (either family) instead of --url or --host: the whoami at ADDR
// on --port, e.g. --dst 2001:db8:ffff::10 --sources 2001:db8:ff00::101.
//
// Every request is a new connection (HTTP: agent off; UDP: a new socket, so a
// new source port unless --sport pins one flow). --sources binds the requests
// round-robin to those local addresses. http and udp print one JSON
// ClientResult. stream opens one new HTTP connection every --every-ms,
// whether or not earlier ones have finished, and prints one StreamSample per
// finished request (see measure.ts); it stops opening after --duration-ms or
// on SIGTERM/SIGINT, and exits once the outstanding ones have finished.

import dgram from 'node:dgram';
import http from 'node:http';
import { isIPv6, type AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { monotonicMs, type StreamSample } from './measure.js';

export interface ClientResult {
  total: number;
  ok: number;
  failed: number;
  /** address the server saw -> requests */
  seen: Record<string, number>;
  /** local source address -> address the server saw -> requests (successes only) */
  bySource: Record<string, Record<string, number>>;
  /** error code (ECONNREFUSED, ETIMEDOUT, HTTP_503, ...) -> requests */
  errors: Record<string, number>;
  elapsedMs: number;
}

/** What one request learned: the local address it left from, and the address the server saw. */
interface Answer {
  local: string;
  seen: string;
}

type Request = (source: string | undefined) => Promise<Answer>;

function timeoutError(): Error {
  return Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' });
}

function httpRequest(url: string, timeoutMs: number): Request {
  return (source) =>
    new Promise((resolve, reject) => {
      const req = http.get(url, { agent: false, localAddress: source }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (d: string) => (body += d));
        res.on('end', () => {
          clearTimeout(timer);
          if (res.statusCode !== 200) reject(Object.assign(new Error('status'), { code: `HTTP_${res.statusCode}` }));
          else resolve({ local: req.socket?.localAddress ?? source ?? '?', seen: body.trim() });
        });
      });
      const timer = setTimeout(() => req.destroy(timeoutError()), timeoutMs);
      req.on('error', (err) => (clearTimeout(timer), reject(err)));
    });
}

function udpRequest(host: string, port: number, sport: number, timeoutMs: number): Request {
  return (source) =>
    new Promise((resolve, reject) => {
      const socket = dgram.createSocket(isIPv6(host) ? 'udp6' : 'udp4');
      const finish = (err: Error | null, answer?: Answer) => {
        clearTimeout(timer);
        socket.close();
        if (err) reject(err);
        else resolve(answer!);
      };
      const timer = setTimeout(() => finish(timeoutError()), timeoutMs);
      socket.on('error', (err) => finish(err));
      socket.on('message', (msg) => finish(null, { local: (socket.address() as AddressInfo).address, seen: msg.toString().trim() }));
      // Connected, so only the server's own answer is accepted and ICMP errors surface as ECONNREFUSED etc.
      socket.bind({ address: source, port: sport }, () => socket.connect(port, host, () => socket.send('whoami?')));
    });
}

async function tally(request: Request, count: number, sources: string[], concurrency: number): Promise<ClientResult> {
  const started = Date.now();
  const result: ClientResult = { total: count, ok: 0, failed: 0, seen: {}, bySource: {}, errors: {}, elapsedMs: 0 };
  const bump = (counts: Record<string, number>, key: string) => (counts[key] = (counts[key] ?? 0) + 1);
  let next = 0;
  async function worker() {
    for (let i = next++; i < count; i = next++) {
      const source = sources.length ? sources[i % sources.length] : undefined;
      try {
        const { local, seen } = await request(source);
        result.ok++;
        bump(result.seen, seen);
        bump((result.bySource[local] ??= {}), seen);
      } catch (err) {
        result.failed++;
        bump(result.errors, (err as NodeJS.ErrnoException).code ?? (err as Error).message);
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, count)) }, worker));
  result.elapsedMs = Date.now() - started;
  return result;
}

/**
 * The measurement stream: connection k is due at t0 + k * everyMs, however
 * long the earlier ones take, so a hanging uplink cannot slow the stream
 * down and hide its own failure. Each start is stamped just before connecting.
 */
async function stream(request: Request, everyMs: number, durationMs: number, sources: string[]): Promise<void> {
  let stopping = false;
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.once(signal, () => (stopping = true));
  const print = (sample: StreamSample): void => void process.stdout.write(JSON.stringify(sample) + '\n');
  const inFlight = new Set<Promise<void>>();
  const t0 = monotonicMs();
  let due = t0;
  for (let k = 0; !stopping && due - t0 < durationMs; k++) {
    const wait = due - monotonicMs();
    if (wait > 0) await sleep(wait);
    if (stopping) break;
    const source = sources.length ? sources[k % sources.length] : undefined;
    const from = source ? { source } : {};
    const start = monotonicMs();
    const done: Promise<void> = request(source).then(
      ({ seen }) => print({ start, end: monotonicMs(), ok: true, seen, error: null, ...from }),
      (err: NodeJS.ErrnoException) => print({ start, end: monotonicMs(), ok: false, seen: null, error: err.code ?? err.message, ...from }),
    ).finally(() => inFlight.delete(done));
    inFlight.add(done);
    // After a stall (a busy machine), carry on from now rather than firing a burst to catch up.
    due = Math.max(due + everyMs, monotonicMs() - everyMs);
  }
  await Promise.all(inFlight);
}

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      url: { type: 'string', default: 'http://192.0.2.10:8080/' },
      host: { type: 'string', default: '192.0.2.10' },
      port: { type: 'string', default: '8080' },
      sport: { type: 'string', default: '0' },
      count: { type: 'string', default: '100' },
      dst: { type: 'string' },
      sources: { type: 'string', default: '' },
      concurrency: { type: 'string', default: '8' },
      'timeout-ms': { type: 'string', default: '2000' },
      'every-ms': { type: 'string', default: '10' },
      'duration-ms': { type: 'string', default: '10000' },
    },
  });
  const mode = positionals[0];
  const timeoutMs = Number(values['timeout-ms']);
  const sport = Number(values.sport);
  const sources = values.sources ? values.sources.split(',') : [];
  const dst = values.dst;
  const url = dst === undefined ? values.url : `http://${isIPv6(dst) ? `[${dst}]` : dst}:${values.port}/`;
  const host = dst ?? values.host;
  let request: Request;
  let concurrency = Number(values.concurrency);
  if (mode === 'stream') {
    const everyMs = Number(values['every-ms']);
    const durationMs = Number(values['duration-ms']);
    if (!(everyMs > 0 && durationMs > 0 && timeoutMs > 0)) {
      process.stderr.write('client stream: --every-ms, --duration-ms and --timeout-ms must be positive numbers\n');
      process.exit(2);
    }
    await stream(httpRequest(url, timeoutMs), everyMs, durationMs, sources);
    return;
  }
  if (mode === 'http') request = httpRequest(url, timeoutMs);
  else if (mode === 'udp') {
    request = udpRequest(host, Number(values.port), sport, timeoutMs);
    // One pinned source port is one flow: its requests can only go one at a time.
    if (sport) concurrency = 1;
  } else {
    process.stderr.write('usage: client http|udp|stream [options] (see src/lab/client.ts)\n');
    process.exit(2);
  }
  const result = await tally(request, Number(values.count), sources, concurrency);
  process.stdout.write(JSON.stringify(result) + '\n');
}

await main();
